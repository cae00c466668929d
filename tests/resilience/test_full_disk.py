"""A results filesystem that fills up mid-run: ``mill eval`` ends with one ``error:`` line naming the file it
could not write and how many samples are committed, and once space is freed the same command completes
to the results of an uninterrupted run.

The disk is a real small tmpfs when the test can mount one (as root; CI runs as root and then must: the
test fails rather than skips there), else ENOSPC is injected at the fsync of every results write.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

PARQUET = Path("outputs/mill-tiny-clip__mill-tiny-clip.pt/tinybench_0shot_precision-fp32.parquet")
#: Room for the run record and a few chunks with their checksums (tmpfs counts whole 4 KiB pages).
SMALL = "28k"


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Callable[[], None]]]:
    """(a directory on a nearly full filesystem, a function that frees space on it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    in_ci = os.environ.get("CI") == "true"
    if in_ci or os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(disk)], check=False)
        if mounted.returncode != 0:
            pytest.fail(f"cannot mount a {SMALL} tmpfs on {disk} (CI runs as root and must)")
        try:
            yield disk, lambda: subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
        return
    real_fsync, budget = os.fsync, [6]

    def fsync_until_full(fd: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 and os.readlink(f"/proc/self/fd/{fd}").startswith(str(disk)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_until_full)
    yield disk, lambda: monkeypatch.setattr(os, "fsync", real_fsync)


def test_a_full_disk_ends_the_run_and_the_same_command_completes_it(
    tmp_path: Path, small_disk: tuple[Path, Callable[[], None]], eval_argv: Any, run_mill: Any, sizes: Any
) -> None:
    reference = tmp_path / "reference"
    assert run_mill(*eval_argv(reference)).code == 0
    disk, free_space = small_disk
    out = disk / "results"

    full = run_mill(*eval_argv(out))
    assert full.code == 2, full.err
    assert "Traceback" not in full.err and "ComputeError" not in full.err
    (line,) = [line for line in full.err.splitlines() if line.startswith("error:")]
    found = re.fullmatch(
        rf"error: cannot write {re.escape(str(out))}/\S+ \(No space left on device\); (\d+) of {sizes.n_samples} "
        r"samples of .* are committed in \S+; free space there .* re-run the same command to continue from there",
        line,
    )
    assert found, line
    committed = int(found.group(1))
    assert 0 < committed < sizes.n_samples and committed % sizes.chunk_size == 0
    assert not list(out.rglob("*.tmp"))

    free_space()
    resumed = run_mill(*eval_argv(out))
    assert resumed.code == 0, resumed.err
    assert "warning:" not in resumed.err  # nothing committed was damaged by the full disk
    assert_frame_equal(pl.read_parquet(out / PARQUET), pl.read_parquet(reference / PARQUET))
    verified = run_mill("verify", "--output_dir", str(out))
    assert verified.code == 0, verified.err


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """(a directory, a function that makes it read-only): a read-only mount when the test can mount one
    (as root, whom permissions do not stop), else a directory without write permission."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        yield disk, lambda: [p.chmod(0o555) for p in [disk, *disk.rglob("*")] if p.is_dir()]  # type: ignore[func-returns-value]
        for p in [disk, *disk.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    try:
        yield disk, lambda: subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("command", ["eval", "rebuild"])
def test_a_read_only_results_directory_is_one_error_line(
    command: str, read_only: tuple[Path, Callable[[], None]], eval_argv: Any, run_mill: Any
) -> None:
    disk, make_read_only = read_only
    out = disk / "results"
    assert run_mill(*eval_argv(out)).code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    make_read_only()
    argv = eval_argv(out) if command == "eval" else ["verify", "--rebuild", "--output_dir", str(out)]
    outcome = run_mill(*argv)
    assert outcome.code == 2, outcome.err
    assert "Traceback" not in outcome.err
    (line,) = [line for line in outcome.err.splitlines() if line.startswith("error:")]
    assert str(out) in line and ("Read-only file system" in line or "Permission denied" in line), line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
