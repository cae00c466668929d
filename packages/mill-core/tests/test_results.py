"""aggregate.csv upserts and rollup rows, per-sample files, atomic writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from attrs import evolve

from mill.core.errors import ResultsError
from mill.core.metrics import MetricValue
from mill.core.results import (
    AGGREGATE_SCHEMA,
    RunFacts,
    model_slug,
    read_aggregate,
    run_rows,
    run_stem,
    settings_digest,
    upsert_aggregate,
)


def test_columns_come_first_in_the_documented_order(
    tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]
) -> None:
    upsert_aggregate(tmp_path, run_rows(facts, "imagenet", zero_shot, ("acc", "acc")))
    header = (tmp_path / "aggregate.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == [
        "model",
        "benchmark",
        "task",
        "task_type",
        "n_shot",
        "metric",
        "performance",
        "stderr",
    ]
    assert {"n_samples", "seed", "limit", "settings", "run_id"} <= set(header[8:])


def test_an_aggregate_file_from_before_scorer_versions_reads_with_them_null(
    tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]
) -> None:
    upsert_aggregate(tmp_path, run_rows(evolve(facts, scorer_version=2), "imagenet", zero_shot, ("acc", "acc")))
    path = tmp_path / "aggregate.csv"
    assert read_aggregate(tmp_path)["scorer_version"].to_list() == [2, 2, 2]
    # As written before versions (and checksums) were recorded.
    pl.read_csv(path, infer_schema=False).drop("scorer_version").write_csv(path)
    path.with_name("aggregate.csv.sha256").unlink()
    old = read_aggregate(tmp_path)
    assert old.schema == pl.Schema(AGGREGATE_SCHEMA)
    assert old["scorer_version"].is_null().all() and old.height == 3
    # The next write keeps the old rows and gives the file the column.
    upsert_aggregate(tmp_path, run_rows(evolve(facts, run_id="r2", seed=1), "imagenet", zero_shot, ("acc", "acc")))
    assert "scorer_version" in path.read_text().splitlines()[0].split(",")
    assert read_aggregate(tmp_path).height == 6


def test_zero_shot_variant_row_is_its_own_rollup(facts: RunFacts, zero_shot: dict[str, MetricValue]) -> None:
    rows = run_rows(facts, "imagenet", zero_shot, ("acc", "acc"))
    assert [(r.task, r.metric) for r in rows] == [
        ("imagenet", "acc"),
        ("imagenet", "acc5"),
        ("imagenet", "mean_per_class_recall"),
    ]


def test_mcq_run_adds_a_rollup_row_under_the_benchmark(facts: RunFacts, zero_shot: dict[str, MetricValue]) -> None:
    facts = evolve(facts, model="Qwen/Qwen3-VL-2B-Instruct", task_type="generative_mcq")
    metrics = {"imagenet_mcq_acc": MetricValue(0.8, 0.01), "unparsed_rate": MetricValue(0.02, 0.001)}
    rows = run_rows(facts, "imagenet_mcq", metrics, ("imagenet_mcq_acc", "acc"))
    rollup = rows[-1]
    assert (rollup.task, rollup.metric, rollup.performance, rollup.stderr) == ("imagenet", "acc", 0.8, 0.01)
    assert rollup.task_type == "generative_mcq"
    assert [(r.task, r.metric) for r in rows[:-1]] == [
        ("imagenet_mcq", "imagenet_mcq_acc"),
        ("imagenet_mcq", "unparsed_rate"),
    ]


def test_upsert_replaces_only_rows_with_the_same_key(
    tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]
) -> None:
    upsert_aggregate(tmp_path, run_rows(facts, "imagenet", zero_shot, ("acc", "acc")))
    smoke = evolve(facts, limit=16, run_id="smoke")
    other_seed = evolve(facts, seed=7, run_id="seed7")
    fp32 = evolve(facts, settings="precision=fp32", default_settings=False, run_id="fp32")
    for variant_facts in (smoke, other_seed, fp32):
        upsert_aggregate(tmp_path, run_rows(variant_facts, "imagenet", {"acc": MetricValue(0.1, 0.01)}, ("acc", "acc")))
    frame = read_aggregate(tmp_path)
    full = frame.filter(pl.col("limit").is_null() & (pl.col("seed") == 42) & (pl.col("settings") == facts.settings))
    assert full.filter(pl.col("metric") == "acc").get_column("performance").to_list() == [0.6656]
    assert len(frame) == 3 + 3
    rerun = evolve(facts, run_id="r2")
    upsert_aggregate(tmp_path, run_rows(rerun, "imagenet", {"acc": MetricValue(0.67, 0.002)}, ("acc", "acc")))
    frame = read_aggregate(tmp_path)
    assert len(frame) == 6
    assert frame.filter(pl.col("run_id") == "r2").get_column("performance").to_list() == [0.67]
    assert frame.schema == pl.Schema(AGGREGATE_SCHEMA)


_WRITER = """
import sys
from pathlib import Path
from mill.core.metrics import MetricValue
from mill.core.results import RunFacts, run_rows, upsert_aggregate

facts = RunFacts(
    model=sys.argv[2], benchmark="imagenet", task_type="zero_shot", n_samples=10, seed=42, limit=None,
    settings="s", default_settings=True, run_id="r", incomplete=False, n_skipped=0, output_file="x",
    finished_at="t",
)
for _ in range(20):
    upsert_aggregate(Path(sys.argv[1]), run_rows(facts, "imagenet", {"acc": MetricValue(0.5, 0.1)}, ("acc", "acc")))
"""


def test_concurrent_writers_keep_both_results(tmp_path: Path) -> None:
    # Separate processes, as two `mill eval` runs sharing an output directory would be.
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), f"model-{i}"]) for i in range(2)]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    frame = read_aggregate(tmp_path)
    assert sorted(frame.get_column("model").to_list()) == ["model-0", "model-1"]


def test_unwritable_output_dir_is_a_clear_error(
    tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ResultsError, match="cannot create the output directory"):
        upsert_aggregate(blocker / "results", run_rows(facts, "imagenet", zero_shot, ("acc", "acc")))


def test_corrupt_aggregate_is_named(tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]) -> None:
    (tmp_path / "aggregate.csv").write_text("model,benchmark\nx,y\n")
    with pytest.raises(ResultsError, match=r"aggregate\.csv is damaged \(not a Mill aggregate file.*verify --rebuild"):
        read_aggregate(tmp_path)


def test_names_of_outputs(facts: RunFacts, zero_shot: dict[str, MetricValue]) -> None:
    assert model_slug("ViT-B-32/laion2b_s34b_b79k") == "ViT-B-32__laion2b_s34b_b79k"
    assert settings_digest({"max_new_tokens": 32, "dtype": "bfloat16"}) == "dtype=bfloat16,max_new_tokens=32"
    default = run_stem("imagenet", seed=42, default_seed=42, limit=None, settings="precision=amp_bf16", default=True)
    assert default == "imagenet_0shot"
    other = run_stem("imagenet", seed=7, default_seed=42, limit=16, settings="precision=fp32", default=False)
    assert other == "imagenet_0shot_seed7_limit16_precision-fp32"
