"""The results directory Mill 0.1.0 wrote (tests/data/results-v0.1.0, see its README) still reads: ``collect``,
``verify``, ``rescore`` and ``verify --rebuild`` work on a copy of it, and every row verifies (``report``, which needs
the report extra, is tested on it by tests/test_report_v0_1_0.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import polars as pl
import pytest

from mill.core.mcq import PARSER_VERSION
from mill.core.results import ResultsDir, read_aggregate, records

Mill = Callable[..., Any]
RESULTS = Path(__file__).parent / "data" / "results-v0.1.0"
N_ROWS = 8


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(RESULTS, out)
    return out


def test_collect_lists_every_run(mill: Mill, results: Path) -> None:
    outcome = mill("collect", "--output_dir", str(results), "--all", "--format", "csv")
    assert outcome.code == 0, outcome.err
    assert {"shapes", "shapes_mcq", "shapes_mcq_likelihood"} <= set(outcome.out.replace(",", " ").split())


def test_every_row_verifies(mill: Mill, results: Path) -> None:
    outcome = mill("verify", "--output_dir", str(results))
    assert outcome.code == 0, outcome.out + outcome.err
    assert f"{N_ROWS} verified, 0 mismatched, 0 unverifiable" in outcome.err


def test_rebuild_keeps_every_row(mill: Mill, results: Path) -> None:
    before = read_aggregate(results).sort("output_file", "task", "metric")
    outcome = mill("verify", "--output_dir", str(results), "--rebuild")
    assert outcome.code == 0, outcome.err
    assert f"{N_ROWS} rows" in outcome.err
    assert read_aggregate(results).sort("output_file", "task", "metric").equals(before)


def test_rescore_then_verify_and_rebuild(mill: Mill, results: Path) -> None:
    outcome = mill("rescore", "--output_dir", str(results))
    assert outcome.code == 0, outcome.err
    assert f"2 → {PARSER_VERSION}" in outcome.out and "rescored" in outcome.out
    (manifest_file,) = results.glob("outputs/*/shapes_mcq_0shot_limit24.json")
    assert json.loads(manifest_file.read_text())["scorer_version"] == PARSER_VERSION
    # Rescore used to leave the manifest's recorded hashes stale: verify called the run mismatched, and a
    # rebuild dropped it.
    verified = mill("verify", "--output_dir", str(results))
    assert verified.code == 0, verified.out + verified.err
    assert f"{N_ROWS} verified" in verified.err
    rebuilt = mill("verify", "--output_dir", str(results), "--rebuild")
    assert rebuilt.code == 0 and f"{N_ROWS} rows" in rebuilt.err, rebuilt.err
    assert set(read_aggregate(results).filter(task_type="generative_mcq")["scorer_version"]) == {PARSER_VERSION}


def test_every_record_reads_and_yields_the_rows_it_wrote(results: Path) -> None:
    """Mill 0.1.0's manifests structure into the typed record, and the rows derived from each (rolling up as
    aggregate.csv says: 0.1.0 did not record it) are the rows that version wrote."""
    store = ResultsDir(results)
    aggregate = read_aggregate(results)
    for stored in records(store):
        assert stored.record is not None and stored.intact and stored.record.verifiable, stored.problem
        written = aggregate.filter(pl.col("output_file") == stored.files.output_file)
        rolls_up = not written.filter(pl.col("task") == stored.record.subject.benchmark).is_empty()
        derived = pl.DataFrame(
            [attrs.asdict(row) for row in stored.record.rows(stored.files.output_file, rolls_up=rolls_up)]
        )
        key = ["task", "metric"]
        assert derived.sort(key).equals(written.select(derived.columns).sort(key))
