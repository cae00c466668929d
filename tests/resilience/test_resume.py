"""Never lose work, never reuse a wrong result: a real ``mill eval`` killed with SIGKILL (or Ctrl-C)
at each kind of commit point resumes to exactly what an uninterrupted run writes; a run whose
identity differs never reuses another's chunks; concurrent runs share aggregate.csv safely.

Subprocesses stop themselves at a chosen commit (stopper/sitecustomize.py), so each kill lands at a
known point rather than after a guessed delay.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from attrs import frozen
from polars.testing import assert_frame_equal

from mill.cli.main import EXIT_INTERRUPTED, main
from mill.core.chunks import RUNS_DIR
from mill.core.engine import CHUNK_SIZE_ENV
from mill.core.results import read_aggregate

CHUNK_SIZE, N_SAMPLES = 8, 60  # as in conftest.Sizes; parametrisation needs them at collection
PARQUET = Path("outputs/mill-tiny-clip__mill-tiny-clip.pt/tinybench_0shot_precision-fp32.parquet")
#: Columns that name one execution rather than the result.
EXECUTION_COLUMNS = ["run_id", "finished_at"]


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, eval_argv: Any, sizes: Any) -> Path:
    """The output directory of an uninterrupted run."""
    assert (sizes.chunk_size, sizes.n_samples) == (CHUNK_SIZE, N_SAMPLES)
    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CHUNK_SIZE_ENV, str(CHUNK_SIZE))
        try:
            main(eval_argv(out))
        except SystemExit as exc:
            raise AssertionError(f"the uninterrupted run failed with status {exc.code}") from None
    return out


def _results(output_dir: Path) -> pl.DataFrame:
    """aggregate.csv's rows of the tiny CLIP's full run, without the columns naming an execution."""
    frame = read_aggregate(output_dir).filter(
        (pl.col("model") == "mill-tiny-clip/mill-tiny-clip.pt") & pl.col("limit").is_null() & (pl.col("seed") == 42)
    )
    return frame.drop(EXECUTION_COLUMNS).sort("task", "metric")


def _assert_same_results(output_dir: Path, reference: Path) -> None:
    assert_frame_equal(pl.read_parquet(output_dir / PARQUET), pl.read_parquet(reference / PARQUET))
    assert_frame_equal(_results(output_dir), _results(reference))
    assert len(_results(output_dir)) == 3


def _manifest(output_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((output_dir / PARQUET.with_suffix(".json")).read_text())
    return loaded


def _run_dir(output_dir: Path) -> Path:
    (run_dir,) = (output_dir / RUNS_DIR).iterdir()
    return run_dir


@frozen
class Stop:
    """Where a subprocess stops itself (a ``stop_at`` point) and which signals it then gets."""

    point: str
    signals: tuple[int, ...]
    flags: tuple[str, ...] = ()


@frozen
class Stopped:
    """What a stopped and signalled run left behind."""

    argv: list[str]
    out: Path
    committed: int  # samples in chunk files after the signals
    mid_write: bool  # a chunk's temporary file existed when it stopped
    code: int | None  # exit status, None while the test still holds it stopped
    err: str
    process: Any


STOPS = {
    "before_the_first_chunk": Stop("after:run.json", (signal.SIGKILL,)),
    # A chunk is committed once its checksum is written after it.
    "between_chunks": Stop("after:chunk-00001.parquet.sha256", (signal.SIGKILL,)),
    # Renamed into place, its checksum not yet written: the next run finds it damaged and recomputes it.
    "between_a_chunk_and_its_checksum": Stop("after:chunk-00001.parquet", (signal.SIGKILL,)),
    "while_a_chunk_is_written": Stop("before:chunk-00002.parquet", (signal.SIGKILL,)),
    "while_the_aggregate_is_updated": Stop("before:aggregate.csv", (signal.SIGKILL,)),
    "ctrl_c_between_chunks": Stop("after:chunk-00001.parquet.sha256", (signal.SIGINT, signal.SIGCONT)),
    # A cluster's pre-emption: SIGTERM stops the run as Ctrl-C does.
    "sigterm_between_chunks": Stop("after:chunk-00001.parquet.sha256", (signal.SIGTERM, signal.SIGCONT)),
    "holding_the_aggregate_lock": Stop("before:aggregate.csv", (), ("--seed", "1")),
}


class StoppedRuns:
    """Every run of :data:`STOPS`, started at once (they are independent, and Python start-up
    dominates their time); :meth:`get` waits for one to stop and signals it."""

    def __init__(self, root: Path, eval_argv: Any, stoppable_mill: Any, foreign_row: Any) -> None:
        self._started: dict[str, tuple[list[str], Path, Any]] = {}
        self._done: dict[str, Stopped] = {}
        for name, stop in STOPS.items():
            out = root / name
            foreign_row(out)
            argv = eval_argv(out, *stop.flags)
            self._started[name] = (argv, out, stoppable_mill(argv, stop_at=stop.point))

    def get(self, name: str) -> Stopped:
        if name not in self._done:
            argv, out, process = self._started[name]
            process.wait_until_stopped()
            run_dir = _run_dir(out)
            mid_write = bool(list(run_dir.glob(".chunk-*.tmp")))
            for number in STOPS[name].signals:
                process.signal(number)
            code = process.wait() if STOPS[name].signals else None
            chunks = list(run_dir.glob("chunk-*.parquet"))
            committed = len(pl.read_parquet(chunks)) if chunks else 0
            self._done[name] = Stopped(argv, out, committed, mid_write, code, process.log.read_text(), process)
        return self._done[name]


@pytest.fixture(scope="session")
def stopped_runs(
    tmp_path_factory: pytest.TempPathFactory, eval_argv: Any, stoppable_mill: Any, foreign_row: Any
) -> StoppedRuns:
    return StoppedRuns(tmp_path_factory.mktemp("stopped"), eval_argv, stoppable_mill, foreign_row)


KILLS = {
    "before_the_first_chunk": 0,
    "between_chunks": 2 * CHUNK_SIZE,
    "between_a_chunk_and_its_checksum": 2 * CHUNK_SIZE,
    "while_a_chunk_is_written": 2 * CHUNK_SIZE,
    "while_the_aggregate_is_updated": N_SAMPLES,
}


@pytest.mark.parametrize("point", list(KILLS))
def test_sigkill_then_rerun_equals_an_uninterrupted_run(
    point: str, stopped_runs: StoppedRuns, reference: Path, run_mill: Any
) -> None:
    killed = stopped_runs.get(point)
    assert killed.code == -signal.SIGKILL
    assert killed.committed == KILLS[point]
    assert killed.mid_write == (point == "while_a_chunk_is_written")
    assert read_aggregate(killed.out)["model"].to_list() == ["other/model"]  # still whole, still there

    outcome = run_mill(*killed.argv)
    assert outcome.code == 0, outcome.err
    _assert_same_results(killed.out, reference)
    unsigned = point == "between_a_chunk_and_its_checksum"
    assert _manifest(killed.out)["n_reused"] == KILLS[point] - (CHUNK_SIZE if unsigned else 0)
    assert ("chunk-00001.parquet is damaged (no checksum recorded" in outcome.err) == unsigned
    assert "other/model" in read_aggregate(killed.out)["model"].to_list()
    assert not list(_run_dir(killed.out).glob(".*.tmp")) and not list(killed.out.glob(".*.tmp"))


@pytest.mark.parametrize("stop", ["ctrl_c_between_chunks", "sigterm_between_chunks"])
def test_ctrl_c_commits_what_is_done_and_says_how_to_resume(
    stopped_runs: StoppedRuns, reference: Path, run_mill: Any, stop: str
) -> None:
    interrupted = stopped_runs.get(stop)
    assert interrupted.code == EXIT_INTERRUPTED
    assert f"interrupted: {2 * CHUNK_SIZE} of {N_SAMPLES} samples" in interrupted.err
    assert "re-run the same command to continue" in interrupted.err
    assert "Traceback" not in interrupted.err
    assert interrupted.committed == 2 * CHUNK_SIZE

    outcome = run_mill(*interrupted.argv)
    assert outcome.code == 0, outcome.err
    assert _manifest(interrupted.out)["n_reused"] == 2 * CHUNK_SIZE
    _assert_same_results(interrupted.out, reference)


def test_two_processes_update_one_aggregate_file(stopped_runs: StoppedRuns, eval_argv: Any) -> None:
    # The other process is stopped while it holds aggregate.csv's lock, its new version written but not
    # renamed into place: without the lock, this one would read the old file and a result would be lost.
    first = stopped_runs.get("holding_the_aggregate_lock")
    outcome: list[object] = []

    def second() -> None:
        try:
            main(eval_argv(first.out, "--seed", "2"))
        except SystemExit as exc:
            outcome.append(exc.code)
        else:
            outcome.append(0)

    thread = threading.Thread(target=second)
    thread.start()
    manifest = first.out / PARQUET.parent / "tinybench_0shot_seed2_precision-fp32.json"
    while not manifest.exists() and thread.is_alive():
        time.sleep(0.05)
    thread.join(timeout=1.0)  # the manifest is written just before the upsert, which must now wait
    assert thread.is_alive(), f"mill eval finished ({outcome}) while another process held the aggregate lock"
    first.process.signal(signal.SIGCONT)
    assert first.process.wait() == 0, first.process.log.read_text()
    thread.join()
    assert outcome == [0]
    frame = read_aggregate(first.out)
    assert sorted(set(frame["seed"].to_list())) == [1, 2, 42]
    assert len(frame.filter(pl.col("model") != "other/model")) == 6


def test_rerun_of_a_finished_run_computes_nothing(
    tmp_path: Path, eval_argv: Any, small_batch_clip: str, run_mill: Any, reference: Path
) -> None:
    out = tmp_path / "out"
    argv = eval_argv(out)
    assert run_mill(*argv).code == 0
    first_run_id = _manifest(out)["run_id"]
    # A different batch size only changes speed: the committed samples stay valid.
    again = run_mill(*eval_argv(out, model=small_batch_clip.replace("batch_size=4", "batch_size=7")))
    assert again.code == 0, again.err
    assert _manifest(out)["n_reused"] == N_SAMPLES
    assert _manifest(out)["run_id"] == first_run_id
    _assert_same_results(out, reference)
    fresh = run_mill(*argv, "--overwrite")
    assert fresh.code == 0, fresh.err
    assert _manifest(out)["n_reused"] == 0
    assert _manifest(out)["run_id"] != first_run_id
    _assert_same_results(out, reference)


def test_a_limit_run_never_stands_in_for_a_full_run(
    tmp_path: Path, eval_argv: Any, run_mill: Any, reference: Path
) -> None:
    out = tmp_path / "out"
    assert run_mill(*eval_argv(out, "--limit", "16")).code == 0
    assert run_mill(*eval_argv(out, "--seed", "7")).code == 0
    full = run_mill(*eval_argv(out))
    assert full.code == 0, full.err
    assert _manifest(out)["n_reused"] == 0
    assert len(list((out / RUNS_DIR).iterdir())) == 3
    _assert_same_results(out, reference)


def test_a_changed_shard_is_a_different_run(tmp_path: Path, eval_argv: Any, tiny_shards: Path, run_mill: Any) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_shards, data)
    out = tmp_path / "out"
    argv = eval_argv(out, "--data_dir", str(data))
    assert run_mill(*argv).code == 0
    with open(data / "test" / "2.tar", "ab") as shard:
        shard.write(b"\0" * 10240)  # two more end-of-archive blocks: same samples, different file
    again = run_mill(*argv)
    assert again.code == 0, again.err
    assert _manifest(out)["n_reused"] == 0
    assert len(list((out / RUNS_DIR).iterdir())) == 2


def test_mcq_run_interrupted_by_ctrl_c_resumes_to_the_same_answers(
    tmp_path: Path, tiny_vlm: str, eval_argv: Any, run_mill: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mill.backends.llm.hf import HfBackend

    def argv(out: Path) -> list[str]:
        args = eval_argv(out, "--limit", "16", model=tiny_vlm)
        args[args.index("tinybench")] = "tinybench_mcq"
        return args

    whole = run_mill(*argv(tmp_path / "whole"))
    assert whole.code == 0, whole.err

    generate = HfBackend.generate
    calls: list[int] = []

    def ctrl_c_on_the_third_batch(self: HfBackend, *args: Any) -> list[str]:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return generate(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(HfBackend, "generate", ctrl_c_on_the_third_batch)
        interrupted = run_mill(*argv(tmp_path / "resumed"))
    assert interrupted.code == EXIT_INTERRUPTED
    assert f"interrupted: {CHUNK_SIZE} of 16 samples" in interrupted.err
    resumed = run_mill(*argv(tmp_path / "resumed"))
    assert resumed.code == 0, resumed.err
    (whole_file,) = (tmp_path / "whole" / "outputs").rglob("*.parquet")
    (resumed_file,) = (tmp_path / "resumed" / "outputs").rglob("*.parquet")
    assert json.loads(resumed_file.with_suffix(".json").read_text())["n_reused"] == CHUNK_SIZE
    assert_frame_equal(pl.read_parquet(resumed_file), pl.read_parquet(whole_file))
    assert_frame_equal(
        read_aggregate(tmp_path / "resumed").drop(EXECUTION_COLUMNS),
        read_aggregate(tmp_path / "whole").drop(EXECUTION_COLUMNS),
    )
