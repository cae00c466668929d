"""mill collect's pivots: one table per metric, MCQ cells and non-default settings marked."""

from __future__ import annotations

from pathlib import Path

from attrs import evolve

from mill.core.metrics import MetricValue
from mill.core.results import RunFacts, read_aggregate, run_rows, upsert_aggregate
from mill.core.tables import metric_tables, select_rows


def _store(tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]) -> None:
    upsert_aggregate(tmp_path, run_rows(facts, "imagenet", zero_shot, ("acc", "acc")))
    vlm = evolve(facts, model="Qwen/Qwen3-VL-2B-Instruct", task_type="generative_mcq", settings="dtype=bfloat16")
    metrics = {"imagenet_mcq_acc": MetricValue(0.81234, 0.01), "unparsed_rate": MetricValue(0.0, 0.0)}
    upsert_aggregate(tmp_path, run_rows(vlm, "imagenet_mcq", metrics, ("imagenet_mcq_acc", "acc")))
    fp32: RunFacts = evolve(facts, model="ViT-B-16/x", settings="precision=fp32", default_settings=False)
    upsert_aggregate(tmp_path, run_rows(fp32, "imagenet", {"acc": MetricValue(0.7, 0.0)}, ("acc", "acc")))
    smoke = evolve(facts, model="smoke/model", limit=16)
    upsert_aggregate(tmp_path, run_rows(smoke, "imagenet", {"acc": MetricValue(0.5, 0.1)}, ("acc", "acc")))


def test_acc_table_puts_clip_and_vlm_side_by_side(
    tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]
) -> None:
    _store(tmp_path, facts, zero_shot)
    tables = metric_tables(select_rows(read_aggregate(tmp_path), metric="acc"))
    assert [t.metric for t in tables] == ["acc"]
    cells = {row["model"]: row["imagenet"] for row in tables[0].frame.to_dicts()}
    assert cells == {
        "ViT-B-32/laion2b_s34b_b79k": "0.6656",
        "Qwen/Qwen3-VL-2B-Instruct": "0.8123†",
        "ViT-B-16/x": "0.7000*",
    }


def test_without_metric_one_table_per_metric_and_limit_runs_hidden(
    tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]
) -> None:
    _store(tmp_path, facts, zero_shot)
    tables = metric_tables(select_rows(read_aggregate(tmp_path)))
    assert sorted(t.metric for t in tables) == [
        "acc",
        "acc5",
        "imagenet_mcq_acc",
        "mean_per_class_recall",
        "unparsed_rate",
    ]
    models = {m for t in tables for m in t.frame.get_column("model").to_list()}
    assert "smoke/model" not in models
    everything = metric_tables(select_rows(read_aggregate(tmp_path), include_all=True))
    assert "smoke/model" in {m for t in everything for m in t.frame.get_column("model").to_list()}


def test_filters_by_model_and_benchmark(tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]) -> None:
    _store(tmp_path, facts, zero_shot)
    rows = select_rows(read_aggregate(tmp_path), models=["ViT-B-16/x"], benchmarks=["imagenet"])
    assert rows.get_column("model").unique().to_list() == ["ViT-B-16/x"]
