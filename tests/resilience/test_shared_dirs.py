"""Shared results and cache directories: every file Mill writes, lock files included, follows the user's
umask, so a colleague of the same group can read the results and resume the run.

The second-user test needs root (to become two other users); CI runs as root, so there it fails, never
skips, when it cannot. Elsewhere, without root, it runs both parts as the current user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from mill.core.chunks import RUNS_DIR

RUN_AS = Path(__file__).parent / "run_as.py"
#: Unused ids: two colleagues of one lab group.
LAB_GID, ALICE, BOB = 61000, 61001, 61002


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of everything under ``root`` (not ``root`` itself), by relative path."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_every_file_and_lock_follows_the_umask(
    tmp_path: Path, run_mill: Any, eval_argv: Callable[..., list[str]], umask: int, file_mode: int, dir_mode: int
) -> None:
    out, cache = tmp_path / "results", tmp_path / "cache"
    previous = os.umask(umask)
    try:
        outcome = run_mill(*eval_argv(out)[:-3], "--cache_dir", str(cache), "--quiet")
    finally:
        os.umask(previous)
    assert outcome.code == 0, outcome.err
    written = {
        **{f"results/{k}": v for k, v in _modes(out).items()},
        **{f"cache/{k}": v for k, v in _modes(cache).items()},
    }
    names = {Path(name).name for name in written}
    # Each kind of file Mill writes is here: results, run state, locks and caches.
    for expected in (
        "aggregate.csv",
        "aggregate.csv.lock",
        "run.json",
        "lock",
        "chunk-00000.parquet",
        "file_hashes.json",
    ):
        assert expected in names, sorted(names)
    assert any(name.endswith(".pt") for name in names) and any(name.endswith(".pt.lock") for name in names)
    assert any(name.startswith("cache/index/") for name in written)
    wrong = {
        name: oct(mode)
        for name, mode in written.items()
        if mode != (dir_mode if (tmp_path / name).is_dir() else file_mode)
    }
    assert not wrong, wrong


@pytest.fixture
def lab(tmp_path: Path, tiny_shards: Path, clip_model: str) -> Iterator[dict[str, Any]]:
    """A world-traversable folder outside pytest's private tmp_path: the model, the shards and the spec
    readable by anyone, and ``shared/``, group-writable (setgid) for the lab group."""
    base = Path(tempfile.mkdtemp(prefix="mill-lab-", dir="/tmp"))
    try:
        base.chmod(0o755)
        model_dir = base / "model"
        model_dir.mkdir(mode=0o755)
        spec_args = dict(part.split("=", 1) for part in clip_model.removeprefix("clip[").removesuffix("]").split(","))
        config = shutil.copy(spec_args["path"], model_dir)
        checkpoint = shutil.copy(spec_args["pretrained"], model_dir)
        shards = shutil.copytree(tiny_shards, base / "shards")
        for path in [Path(config), Path(checkpoint), *Path(shards).rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        Path(shards).chmod(0o755)
        shared = base / "shared"
        shared.mkdir()
        if os.geteuid() == 0:
            os.chown(shared, 0, LAB_GID)
        shared.chmod(0o2775)
        yield {
            "base": base,
            "shared": shared,
            "shards": Path(shards),
            "model": f"clip[path={config},pretrained={checkpoint},dtype=float32,batch_size=4,num_workers=0]",
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def lab_umask() -> Iterator[None]:
    """Umask 002 in this process, so that children started without root inherit it too."""
    previous = os.umask(0o002)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("lab_umask")
def test_a_colleague_of_the_same_group_resumes_a_run_in_a_shared_directory(
    lab: dict[str, Any],
    write_spec: Callable[..., Path],
    eval_argv: Callable[..., list[str]],
    stoppable_mill: Callable[..., Any],
    run_mill: Any,
    sizes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_root = os.geteuid() == 0
    if not as_root and os.environ.get("CI") == "true":
        pytest.fail(
            f"CI runs as root: this test must become two other users there, and it is running as uid {os.geteuid()}"
        )
    spec = write_spec(lab["base"] / "tinybench.toml", lab["shards"])
    spec.chmod(0o644)
    out, cache = lab["shared"] / "results", lab["shared"] / "cache"
    argv = [*eval_argv(out, model=lab["model"], spec=spec)[:-3], "--cache_dir", str(cache), "--quiet"]
    home = lab["shared"] / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    monkeypatch.setenv("HOME", str(home))

    def as_user(uid: int) -> list[str]:
        return [str(RUN_AS), str(uid), str(LAB_GID), "002"] if as_root else ["-m", "mill.cli"]

    # Alice's run is killed (kill -9) just after its second chunk is committed.
    alice = stoppable_mill(argv, stop_at="after:chunk-00001.parquet.sha256", runner=as_user(ALICE))
    alice.wait_until_stopped()
    alice.signal(signal.SIGKILL)
    alice.wait()
    (run_dir,) = (out / RUNS_DIR).iterdir()
    committed = {p.name: p.stat() for p in run_dir.glob("chunk-*.parquet")}
    assert sorted(committed) == ["chunk-00000.parquet", "chunk-00001.parquet"]
    n_committed = len(pl.read_parquet(sorted(run_dir.glob("chunk-*.parquet"))))
    assert n_committed == 2 * sizes.chunk_size
    if as_root:
        assert {s.st_uid for s in committed.values()} == {ALICE}
        assert {stat.S_IMODE(s.st_mode) for s in committed.values()} == {0o664}
        assert stat.S_IMODE((run_dir / "lock").stat().st_mode) == 0o664

    # Bob, of the same group, runs the same command: he takes Alice's lock, reuses her chunks, finishes the run.
    bob = stoppable_mill(argv, runner=as_user(BOB))
    code = bob.wait()
    assert code == 0, bob.log.read_text()
    (manifest_path,) = (out / "outputs").rglob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["n_reused"] == n_committed
    assert manifest["n_samples"] == sizes.n_samples
    for name, before in committed.items():
        assert (run_dir / name).stat().st_ino == before.st_ino  # reused as they were, not rewritten
    if as_root:
        assert (out / "aggregate.csv").stat().st_uid == BOB
        assert stat.S_IMODE(manifest_path.stat().st_mode) == 0o664

    # And the results are those of one uninterrupted run.
    reference = lab["base"] / "reference"
    outcome = run_mill(*eval_argv(reference, model=lab["model"], spec=spec))
    assert outcome.code == 0, outcome.err
    (reference_parquet,) = (reference / "outputs").rglob("*.parquet")
    assert_frame_equal(pl.read_parquet(manifest_path.with_suffix(".parquet")), pl.read_parquet(reference_parquet))
