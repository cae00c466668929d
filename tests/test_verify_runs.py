"""Every kind of run passes ``mill verify`` with its ``scorer_version`` intact (issue 20): a fresh zero-shot, a
generative and a likelihood multiple-choice run, a run graded again by ``mill rescore``, and all of them after
``mill verify --rebuild``. Verify used to compare each row with one it rebuilt without ``scorer_version`` (every
fresh generative run was "mismatched"), and rescore patched a copy of the old manifest whose recorded hashes then
went stale (verify called the run mismatched, and a rebuild dropped it)."""

from __future__ import annotations

from pathlib import Path

import attrs
import polars as pl
import pytest

from mill.core.evaluation import evaluate
from mill.core.mcq import PARSER_VERSION
from mill.core.results import AggregateRow, read_aggregate, upsert_aggregate
from mill.core.results_dir import ResultsDir, records
from mill.testing.cli import Outcome, run_in_process

DEMO_CLIP = "clip[path=mill-shapes,pretrained=mill-shapes]"
N_ROWS = 8  # zero-shot 3 metrics; generative 2 and its rollup row; likelihood 2 (no rollup)


def _mill(*argv: str) -> Outcome:
    outcome = run_in_process(*argv)
    assert outcome.code == 0, outcome.out + outcome.err
    return outcome


def _verified(out: Path) -> None:
    outcome = _mill("verify", "--output_dir", str(out))
    assert f"{N_ROWS} verified, 0 mismatched, 0 unverifiable" in outcome.err


def _scorer_versions(out: Path) -> set[int | None]:
    """The grading rules' version in the generative run's rows and in its record."""
    rows = read_aggregate(out).filter(pl.col("task_type") == "generative_mcq")
    results = ResultsDir(out)
    (files,) = [f for f in results.stored_runs() if f.per_sample.name.startswith("shapes_mcq_0shot")]
    record = results.read_record(files).record
    assert record is not None
    return {*rows["scorer_version"].to_list(), record.outcome.scorer_version}


def _age_generative_run(out: Path, version: int) -> None:
    """Leave the generative run as a Mill whose parser was ``version`` wrote it (record sealed, rows to match)."""
    results = ResultsDir(out)
    (files,) = [f for f in results.stored_runs() if f.per_sample.name.startswith("shapes_mcq_0shot")]
    record = results.read_record(files).record
    assert record is not None and record.files.per_sample_sha256 is not None
    aged = attrs.evolve(record, outcome=attrs.evolve(record.outcome, scorer_version=version))
    results.write_record(files, aged.with_digests(record.files.per_sample_sha256))
    rows = read_aggregate(out).filter(pl.col("output_file") == files.output_file)
    upsert_aggregate(out, [AggregateRow(**{**row, "scorer_version": version}) for row in rows.iter_rows(named=True)])


@pytest.fixture
def results(tmp_path: Path, vlm_model: str, cache_dir: Path) -> Path:
    out = tmp_path / "results"
    flags = ("--output_dir", str(out), "--cache_dir", str(cache_dir), "--limit", "24", "--quiet")
    for model, benchmark in [
        (DEMO_CLIP, "shapes"),
        (vlm_model, "shapes_mcq"),
        (vlm_model, "shapes_mcq_likelihood"),
    ]:
        _mill("eval", model, benchmark, *flags)
    return out


def test_fresh_rescored_and_rebuilt_runs_all_verify(results: Path) -> None:
    assert read_aggregate(results).height == N_ROWS
    _verified(results)
    assert _scorer_versions(results) == {PARSER_VERSION}

    _age_generative_run(results, PARSER_VERSION - 1)
    _verified(results)  # as the older Mill wrote it
    rescored = _mill("rescore", "--output_dir", str(results))
    assert f"{PARSER_VERSION - 1} → {PARSER_VERSION}" in rescored.out and "1 of 1 runs rescored" in rescored.out
    _verified(results)
    assert _scorer_versions(results) == {PARSER_VERSION}

    before = read_aggregate(results).sort("output_file", "task", "metric")
    rebuilt = _mill("verify", "--output_dir", str(results), "--rebuild")
    assert f"rebuilt {results / 'aggregate.csv'}: {N_ROWS} rows" in rebuilt.err and "left out" not in rebuilt.err
    assert read_aggregate(results).sort("output_file", "task", "metric").equals(before)
    _verified(results)
    assert _scorer_versions(results) == {PARSER_VERSION}


def test_evaluate_says_where_it_wrote(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default output directory is resolved once, by evaluate(); the caller reads it from the result."""
    monkeypatch.setenv("MILL_OUTPUT_DIR", str(tmp_path / "from-env"))
    result = evaluate(DEMO_CLIP, "shapes", limit=8, cache_dir=cache_dir)
    assert result.output_dir == tmp_path / "from-env"
    results = ResultsDir(result.output_dir)
    (stored,) = list(records(results))
    assert stored.intact and stored.record == result.record
    assert result.runs[0].per_sample_file == stored.files.per_sample
    assert evaluate(DEMO_CLIP, "shapes", limit=8, cache_dir=cache_dir, output_dir=None).output_dir is None
