"""The typed run record: one flat JSON manifest and back, its hashes sealed and checked, its rows derived."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import polars as pl
import pytest

from mill.core.metrics import MetricValue
from mill.core.record import (
    Headline,
    Outcome,
    Provenance,
    RunRecord,
    Settings,
    Shard,
    Subject,
    from_json,
    intact,
    to_json,
)
from mill.core.results import ResultsDir, read_aggregate

RECORD = RunRecord(
    Subject(model="m/1", benchmark="shapes", variant="shapes_mcq", task_type="generative_mcq", spec_hash="abc"),
    Settings(
        seed=42,
        settings="dtype=float32",
        default_settings=True,
        headline=Headline("shapes_mcq_acc", "acc"),
        rolls_up=True,
        resolved_args={"path": Path("/models/m"), "batch_size": 8},
    ),
    Provenance(
        run_id="r1",
        finished_at="2026-12-06T19:43:40.193445+00:00",
        shards=(Shard("test/0.tar", 10, "f" * 64, 'etag:"abc"'),),
        run_info={"samples_by_batch_size": {"8": 16, "1": 8}},
    ),
    Outcome(
        metrics={"shapes_mcq_acc": MetricValue(0.5, 0.1), "unparsed_rate": MetricValue(0.0, 0.0)},
        n_samples=24,
        scorer_version=3,
    ),
)


def test_the_manifest_is_flat_json_with_the_keys_mill_0_1_0_wrote() -> None:
    document = json.loads(json.dumps(to_json(RECORD), default=str))
    assert document["model"] == "m/1" and document["seed"] == 42 and document["run_id"] == "r1"
    assert document["metrics"]["shapes_mcq_acc"] == {"value": 0.5, "stderr": 0.1}
    assert document["headline"] == {"metric": "shapes_mcq_acc", "benchmark_metric": "acc"}
    # 0.1.0's three shard keys, and the remote version the run read (None for a local file).
    assert document["shards"] == [{"name": "test/0.tar", "size": 10, "sha256": "f" * 64, "version": 'etag:"abc"'}]
    assert document["scorer_version"] == 3 and document["rolls_up"] is True
    back = from_json(document)
    assert back.outcome == RECORD.outcome and back.subject == RECORD.subject


def test_sealed_hashes_check_and_any_change_breaks_them(tmp_path: Path) -> None:
    results = ResultsDir(tmp_path)
    files = results.run_files("m/1", "shapes_mcq_0shot")
    sealed = RECORD.with_digests(results.write_per_sample(files, pl.DataFrame({"key": ["a"]})))
    results.write_record(files, sealed)
    stored = results.read_record(files)
    assert stored.intact and stored.record is not None and sealed.verifiable
    # As JSON keeps it: a path argument reads back as its text.
    assert to_json(stored.record) == json.loads(json.dumps(to_json(sealed), default=str))
    document = json.loads(files.record.read_text())
    assert intact(document)
    document["metrics"]["shapes_mcq_acc"]["value"] = 0.9
    assert not intact(document)


def test_a_record_missing_what_a_check_needs_is_not_verifiable() -> None:
    older = from_json({"run_id": "r", "model": "m", "benchmark": "b", "variant": "b", "seed": 1})
    assert not older.verifiable and older.outcome.metrics == {}


def test_a_wrong_type_names_its_key() -> None:
    with pytest.raises(ValueError, match="seed"):
        from_json({**to_json(RECORD), "seed": "forty-two"})


def test_rows_follow_rolls_up() -> None:
    rows = RECORD.rows("outputs/m__1/shapes_mcq_0shot.parquet")
    assert {(r.task, r.metric) for r in rows} == {
        ("shapes_mcq", "shapes_mcq_acc"),
        ("shapes_mcq", "unparsed_rate"),
        ("shapes", "acc"),
    }
    assert {r.scorer_version for r in rows} == {3} and {r.finished_at for r in rows} == {"2026-12-06T19:43:40+00:00"}
    alone = attrs.evolve(RECORD, settings=attrs.evolve(RECORD.settings, rolls_up=False))
    assert {r.task for r in alone.rows("x")} == {"shapes_mcq"}


def test_samples_by_batch_size() -> None:
    assert RECORD.provenance.samples_by_batch_size == {8: 16, 1: 8}
    assert Provenance(run_id="r").samples_by_batch_size == {}


def test_read_aggregate_of_nothing_is_empty(tmp_path: Path) -> None:
    assert read_aggregate(tmp_path).is_empty()
