"""mill collect's pivots: one table per metric, MCQ cells and non-default settings marked."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from attrs import evolve

from mill.cli.tables import (
    MISSING,
    REPORTED_COLUMNS,
    comparison_tables,
    legend,
    metric_tables,
    reported_tables,
    select_rows,
    usage_table,
)
from mill.core.comparison import ComparedRun, compare_runs
from mill.core.metrics import MetricValue
from mill.core.registry import builtin_spec_dir
from mill.core.results import RunFacts, read_aggregate, run_rows, upsert_aggregate
from mill.core.spec import ReportedBaseline, Spec
from mill.core.specfile import load_spec


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


def _imagenet_spec() -> Spec:
    return load_spec(builtin_spec_dir() / "imagenet.toml")


def test_reported_table_puts_mill_beside_the_published_numbers(
    tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]
) -> None:
    _store(tmp_path, facts, zero_shot)
    tables = reported_tables(select_rows(read_aggregate(tmp_path)), [_imagenet_spec()])
    # The spec's baselines name two tasks: the zero-shot rollup (open_clip's figures) and the classifier
    # variant (timm's and torchvision's); each gets its table, Mill's column empty where nothing ran.
    assert [(t.benchmark, t.variant, t.metric) for t in tables] == [
        ("imagenet", "imagenet", "acc"),
        ("imagenet", "imagenet_classifier", "acc"),
    ]
    assert set(tables[1].frame.get_column("Mill").to_list()) == {MISSING}
    frame = tables[0].frame
    assert tuple(frame.columns) == REPORTED_COLUMNS
    source = "https://github.com/mlfoundations/open_clip/blob/main/docs/openclip_results.csv"
    assert frame.rows() == [
        ("ViT-B-32/laion2b_s34b_b79k", "0.6656", "0.6656", source, "+0.0000"),
        ("ViT-B-32/openai", MISSING, "0.6332", source, MISSING),
        ("ViT-B-16/laion2b_s34b_b88k", MISSING, "0.7023", source, MISSING),
        ("ViT-L-14/laion2b_s32b_b82k", MISSING, "0.7525", source, MISSING),
        # Runs without a published number follow, by name; the VLM's rollup cell keeps its MCQ mark.
        ("Qwen/Qwen3-VL-2B-Instruct", "0.8123†", MISSING, MISSING, MISSING),
        ("ViT-B-16/x", "0.7000*", MISSING, MISSING, MISSING),
    ]


def test_reported_table_without_runs_lists_the_baselines(tmp_path: Path) -> None:
    tables = reported_tables(read_aggregate(tmp_path), [_imagenet_spec()])
    assert [row[1:3] for row in tables[0].frame.rows()] == [
        (MISSING, "0.6656"),
        (MISSING, "0.6332"),
        (MISSING, "0.7023"),
        (MISSING, "0.7525"),
    ]


def test_reported_delta_and_default_settings_win(tmp_path: Path, facts: RunFacts) -> None:
    upsert_aggregate(tmp_path, run_rows(facts, "imagenet", {"acc": MetricValue(0.6701, 0.002)}, ("acc", "acc")))
    # A later run in other settings does not displace the default-settings number from the comparison.
    fp32 = evolve(facts, settings="precision=fp32", default_settings=False, finished_at="2026-11-30T00:00:00+00:00")
    upsert_aggregate(tmp_path, run_rows(fp32, "imagenet", {"acc": MetricValue(0.6, 0.002)}, ("acc", "acc")))
    tables = reported_tables(select_rows(read_aggregate(tmp_path)), [_imagenet_spec()])
    assert tables[0].frame.row(0) == (
        "ViT-B-32/laion2b_s34b_b79k",
        "0.6701",
        "0.6656",
        tables[0].frame.item(0, "Source"),
        "+0.0045",
    )


def test_reported_filters_by_metric_and_model(
    tmp_path: Path, facts: RunFacts, zero_shot: dict[str, MetricValue]
) -> None:
    _store(tmp_path, facts, zero_shot)
    assert reported_tables(select_rows(read_aggregate(tmp_path)), [_imagenet_spec()], metric="acc5") == []
    models = ["ViT-B-32/openai", "Qwen/Qwen3-VL-2B-Instruct"]
    rows = select_rows(read_aggregate(tmp_path), models=models)
    only = reported_tables(rows, [_imagenet_spec()], models=models)
    assert only[0].frame.select("Model", "Mill", "Reported").rows() == [
        ("ViT-B-32/openai", MISSING, "0.6332"),
        ("Qwen/Qwen3-VL-2B-Instruct", "0.8123†", MISSING),
    ]


def test_reported_delta_below_the_shown_precision_is_unsigned_zero(tmp_path: Path, facts: RunFacts) -> None:
    # 275/300 = 0.91666... against a published 0.9167 differs by -0.00003: shown as +0.0000, never -0.0000.
    upsert_aggregate(tmp_path, run_rows(facts, "imagenet", {"acc": MetricValue(275 / 300, 0.01)}, ("acc", "acc")))
    spec = evolve(_imagenet_spec(), reported=(ReportedBaseline(model=facts.model, value=0.9167, source="s"),))
    tables = reported_tables(select_rows(read_aggregate(tmp_path)), [spec])
    assert tables[0].frame.row(0) == (facts.model, "0.9167", "0.9167", "s", "+0.0000")


def test_usage_table_lists_each_served_run_once_under_its_variant(tmp_path: Path, facts: RunFacts) -> None:
    mcq = {"imagenet_mcq_acc": MetricValue(0.5, 0.01), "unparsed_rate": MetricValue(0.0, 0.0)}
    served = evolve(facts, model="gpt-4o", task_type="generative_mcq", output_file="outputs/gpt-4o/a.parquet")
    local = evolve(served, model="qwen", output_file="outputs/qwen/b.parquet")
    for run in (served, local, evolve(facts, output_file="outputs/clip/c.parquet")):
        upsert_aggregate(tmp_path, run_rows(run, "imagenet_mcq", mcq, ("imagenet_mcq_acc", "acc")))
    recorded = {
        "outputs/gpt-4o/a.parquet": {"requests": 3, "input_tokens": 900, "output_tokens": 6, "cost_usd": 0.00231},
        "outputs/qwen/b.parquet": {"requests": 3, "input_tokens": 800, "output_tokens": 5},
    }
    table = usage_table(read_aggregate(tmp_path), recorded.get)
    assert table is not None
    assert table.frame.rows() == [
        ("gpt-4o", "imagenet_mcq", "3", "900", "6", "0.0023"),
        ("qwen", "imagenet_mcq", "3", "800", "5", MISSING),
    ]
    assert usage_table(read_aggregate(tmp_path), lambda _: None) is None


def test_both_multiple_choice_kinds_share_one_legend_entry() -> None:
    assert legend().count("†") == 1


def _compared(name: str, correct: list[bool]) -> ComparedRun:
    samples = pl.DataFrame(
        {"key": [f"s{i}" for i in range(len(correct))], "gold": [0] * len(correct), "correct": correct}
    )
    return ComparedRun(name=name, samples=samples, benchmark="imagenet", variant="imagenet", spec_hash="h1")


def test_comparison_tables_lead_with_shared_samples_differences_and_mcnemar() -> None:
    base = [True, False] * 20
    runs = [_compared("a", base), _compared("b", [not c if i < 2 else c for i, c in enumerate(base)])]
    comparisons = compare_runs(runs, n_resamples=200)
    tables = comparison_tables(comparisons)
    assert [t.title for t in tables][:3] == [
        "Shared samples",
        "Differences (run − baseline) with their paired bootstrap 95% interval",
        "McNemar's exact test of accuracy",
    ]
    assert tables[2].frame.to_dicts()[0] == {
        "baseline": "a",
        "run": "b",
        "shared": 40,
        "baseline only right": comparisons[0].mcnemar.baseline_only,
        "run only right": comparisons[0].mcnemar.other_only,
        "p_value": comparisons[0].mcnemar.p_value,
    }
