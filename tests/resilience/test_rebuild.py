"""``mill verify --rebuild`` under SIGKILL at each of its writes, two rebuilds at once, and a rebuild beside an
evaluation that finishes meanwhile: afterwards ``aggregate.csv`` holds every row it held before (those of a run
written before Mill recorded hashes included) plus the evaluation's, and no backup took another's name."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mill.core.checksum import MANIFEST_HASH_KEY
from mill.core.results import read_aggregate

#: The columns that tell one stored result from another.
ROW = ["model", "task", "metric", "seed", "run_id", "performance"]
#: Where a rebuild writes, in order: the backup copy, the checksum listing old and new, the file, the checksum.
WRITES = [
    "before:aggregate.csv.*.bak",
    "after:aggregate.csv.*.bak",
    "before:aggregate.csv.sha256",
    "before:aggregate.csv",
    "after:aggregate.csv",
]


def _rows(out: Path) -> set[tuple[Any, ...]]:
    return set(read_aggregate(out).select(ROW).iter_rows())


def _backups(out: Path) -> list[Path]:
    return sorted(out.glob("aggregate.csv.*.bak"))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, eval_argv: Any, mill_in_process: Any) -> Path:
    """Two runs of tinybench (seeds 42 and 1), the second's manifest as written before hashes were recorded
    (a rebuild can only keep its rows from the previous aggregate.csv)."""
    out = tmp_path_factory.mktemp("rebuild") / "results"
    for seed in ("42", "1"):
        done = mill_in_process(*eval_argv(out, "--seed", seed))
        assert done.code == 0, done.err
    (legacy,) = (out / "outputs").rglob("*_seed1_*.json")
    manifest = json.loads(legacy.read_text())
    for key in ("per_sample_sha256", MANIFEST_HASH_KEY, "task_type", "default_settings", "headline"):
        del manifest[key]
    legacy.write_text(json.dumps(manifest))
    assert read_aggregate(out).filter(pl.col("seed") == 1).height == 3
    return out


@pytest.fixture
def copy(results: Path, tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(results, out)
    return out


@pytest.mark.parametrize("point", WRITES)
def test_sigkill_at_each_write_of_a_rebuild_loses_no_row(
    point: str, copy: Path, stoppable_mill: Any, run_mill: Any
) -> None:
    before = _rows(copy)
    original = (copy / "aggregate.csv").read_bytes()
    rebuild = stoppable_mill(["verify", "--rebuild", "--output_dir", str(copy)], stop_at=point)
    rebuild.wait_until_stopped()
    rebuild.signal(signal.SIGKILL)
    assert rebuild.wait() == -signal.SIGKILL
    # The old file or the new one, whole, and never the only copy moved away.
    assert _rows(copy) == before
    kept = _backups(copy)
    assert [b.read_bytes() for b in kept] in ([], [original])

    again = run_mill("verify", "--rebuild", "--output_dir", str(copy))
    assert again.code == 0, again.err
    assert _rows(copy) == before
    assert len(_backups(copy)) == len(kept) + 1
    assert not list(copy.glob(".aggregate.csv*.tmp"))


def test_two_rebuilds_at_once_keep_every_row_and_two_backups(copy: Path, stoppable_mill: Any) -> None:
    before = _rows(copy)
    original = (copy / "aggregate.csv").read_bytes()
    rebuilds = [stoppable_mill(["verify", "--rebuild", "--output_dir", str(copy)]) for _ in range(2)]
    assert [r.wait() for r in rebuilds] == [0, 0], [r.log.read_text() for r in rebuilds]
    assert _rows(copy) == before
    kept = _backups(copy)
    assert len(kept) == 2  # in the same second they used to share a name, the first backup overwritten
    assert original in [b.read_bytes() for b in kept]


def test_a_rebuild_beside_a_finishing_eval_keeps_the_eval_rows(copy: Path, stoppable_mill: Any, eval_argv: Any) -> None:
    before = _rows(copy)
    # The evaluation stops just before it writes its manifest; the rebuild then reads the manifests (not
    # the evaluation's) and stops holding the lock; the evaluation goes on and must wait for it.
    evaluation = stoppable_mill(eval_argv(copy, "--seed", "5"), stop_at="before:tinybench_0shot_seed5*.json")
    evaluation.wait_until_stopped()
    rebuild = stoppable_mill(["verify", "--rebuild", "--output_dir", str(copy)], stop_at="before:aggregate.csv.*.bak")
    rebuild.wait_until_stopped()
    evaluation.signal(signal.SIGCONT)
    deadline = time.monotonic() + 60
    while not list((copy / "outputs").rglob("tinybench_0shot_seed5*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    rebuild.signal(signal.SIGCONT)
    assert rebuild.wait() == 0, rebuild.log.read_text()
    assert evaluation.wait() == 0, evaluation.log.read_text()
    after = _rows(copy)
    assert before < after
    assert {row[3] for row in after - before} == {5} and len(after - before) == 3
