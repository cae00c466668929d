"""collect's suite tables: the members' unweighted mean (never stored), and beside the published numbers' mean."""

from __future__ import annotations

from pathlib import Path

import pytest
from attrs import evolve

from mill.cli.suite_tables import MEAN_COLUMN, mean_text, suite_reported_tables, suite_tables, suites_to_show
from mill.cli.tables import select_rows
from mill.core.metrics import MetricValue
from mill.core.registry import SpecRegistry
from mill.core.results import RunFacts, read_aggregate, run_rows, upsert_aggregate
from mill.core.suite import Suite, SuiteMean, discover_suites

ROBUSTNESS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "objectnet")
VALUES = (0.5, 0.4, 0.2, 0.7, 0.45)


@pytest.fixture(scope="module")
def registry() -> SpecRegistry:
    return SpecRegistry.discover(env={})


def _store(tmp_path: Path, facts: RunFacts, values: dict[str, float]) -> None:
    for member, value in values.items():
        member_facts = evolve(facts, benchmark=member)
        upsert_aggregate(tmp_path, run_rows(member_facts, member, {"acc": MetricValue(value, 0.01)}, ("acc", "acc")))


def test_mean_only_where_every_member_has_a_result(tmp_path: Path, facts: RunFacts, registry: SpecRegistry) -> None:
    _store(tmp_path, facts, dict(zip(ROBUSTNESS, VALUES, strict=True)))
    partial = evolve(facts, model="partial/model")
    _store(tmp_path, partial, dict(zip(ROBUSTNESS[:3], VALUES[:3], strict=True)))
    # Same model, other settings on one member: not averaged with the default-settings results.
    fp32 = evolve(facts, settings="precision=fp32", default_settings=False)
    _store(tmp_path, fp32, {"imagenet_a": 0.9})
    before = (tmp_path / "aggregate.csv").read_bytes()
    rows = select_rows(read_aggregate(tmp_path))
    suites = discover_suites(env={})
    shown = suites_to_show(rows, suites, [])
    assert [s.name for s in shown] == ["imagenet_family", "imagenet_robustness"]
    (table,) = suite_tables(rows, [suites["imagenet_robustness"]], registry.specs)
    assert table.frame.columns == ["Model", *ROBUSTNESS, MEAN_COLUMN]
    cells = {(r["Model"], r["imagenet_a"]): r for r in table.frame.to_dicts()}
    assert cells[facts.model, "0.2000"][MEAN_COLUMN] == f"{sum(VALUES) / 5:.4f}"
    assert cells[facts.model, "0.9000*"][MEAN_COLUMN] == "— (1 of 5)"
    assert cells["partial/model", "0.2000"][MEAN_COLUMN] == "— (3 of 5)"
    assert cells["partial/model", "0.2000"]["objectnet"] == "—"
    (family,) = suite_tables(rows, [suites["imagenet_family"]], registry.specs)
    assert {r[MEAN_COLUMN] for r in family.frame.to_dicts()} == {"— (5 of 7)", "— (3 of 7)", "— (1 of 7)"}
    # The mean is a view: the results store is untouched and holds no suite row.
    assert (tmp_path / "aggregate.csv").read_bytes() == before
    assert not set(read_aggregate(tmp_path).get_column("task").to_list()) & set(suites)


def test_reported_mean_beside_mill(tmp_path: Path, facts: RunFacts, registry: SpecRegistry) -> None:
    _store(tmp_path, facts, dict(zip(ROBUSTNESS, VALUES, strict=True)))
    rows = select_rows(read_aggregate(tmp_path))
    suites = discover_suites(env={})
    (table,) = suite_reported_tables(rows, [suites["imagenet_robustness"]], registry.specs)
    by_model = {r["Model"]: r for r in table.frame.to_dicts()}
    published = [next(b.value for b in registry.specs[m].reported if b.model == facts.model) for m in ROBUSTNESS]
    reported_mean = sum(published) / 5
    mill_mean = sum(VALUES) / 5
    row = by_model[facts.model]
    assert row["Mill"] == f"{mill_mean:.4f}"
    assert row["Reported"] == f"{reported_mean:.4f}"
    assert row["Δ"] == f"{round(mill_mean - reported_mean, 4) + 0.0:+.4f}"
    assert by_model["ViT-B-32/openai"]["Mill"] == "—"
    assert len(by_model) == 4


def test_mean_text_says_how_many_members_and_which_cannot_run() -> None:
    assert mean_text(SuiteMean(0.3, 3, 3, ())) == "0.3000"
    assert mean_text(SuiteMean(None, 1, 3, ())) == "— (1 of 3)"
    assert mean_text(SuiteMean(0.3, 3, 4, ("winogavil",))) == "0.3000 (3 of 4, winogavil missing)"
    assert mean_text(SuiteMean(None, 1, 4, ("winogavil",))) == "— (1 of 4, winogavil missing)"


# A suite in DataComp's shape over specs main has: three headline metrics, and a member Mill cannot run.
MINI = """name = "mini"
description = "d"
benchmarks = ["pets", "mnist", "flickr30k"]
[unavailable]
winogavil = "a task kind Mill does not have"
"""


@pytest.fixture
def mini(tmp_path: Path) -> dict[str, Suite]:
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mini.toml").write_text(MINI)
    return discover_suites(env={"MILL_SPEC_PATH": str(tmp_path)})


def _store_metrics(out: Path, facts: RunFacts, benchmark: str, metrics: dict[str, float], headline: str) -> None:
    values = {name: MetricValue(value, 0.01) for name, value in metrics.items()}
    upsert_aggregate(out, run_rows(evolve(facts, benchmark=benchmark), benchmark, values, (headline, headline)))


def test_mean_of_headline_metrics_over_the_evaluable_members(
    tmp_path: Path, facts: RunFacts, registry: SpecRegistry, mini: dict[str, Suite]
) -> None:
    out = tmp_path / "results"
    # Each member's headline metric is averaged (pets: mean per-class recall, not its top-1), as DataComp's
    # main metrics are: (0.5 + 0.25 + 0.75) / 3 = 0.5.
    _store_metrics(out, facts, "pets", {"acc": 0.9, "mean_per_class_recall": 0.5}, "mean_per_class_recall")
    _store_metrics(out, facts, "mnist", {"acc": 0.25}, "acc")
    _store_metrics(out, evolve(facts, model="partial/model"), "mnist", {"acc": 0.25}, "acc")
    (table,) = suite_tables(select_rows(read_aggregate(out)), [mini["mini"]], registry.specs)
    assert table.metric == "headline metric"
    assert table.frame.columns == ["Model", "pets", "mnist", "flickr30k", MEAN_COLUMN]
    means = {r["Model"]: r[MEAN_COLUMN] for r in table.frame.to_dicts()}
    assert means == {facts.model: "— (2 of 4, winogavil missing)", "partial/model": "— (1 of 4, winogavil missing)"}
    _store_metrics(out, facts, "flickr30k", {"mean_recall@1": 0.75, "image_to_text_R@1": 0.8}, "mean_recall@1")
    (table,) = suite_tables(select_rows(read_aggregate(out)), [mini["mini"]], registry.specs)
    means = {r["Model"]: r[MEAN_COLUMN] for r in table.frame.to_dicts()}
    assert means[facts.model] == "0.5000 (3 of 4, winogavil missing)"
