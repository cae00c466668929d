"""The zero_shot kind's metrics: top-1 under the variant's metric name, or, for a variant whose metric is
``mean_per_class_recall``, ``macro_f1`` or a worst-group accuracy (DataComp's main metrics on some datasets),
that metric as the headline; the samples' metadata fields in the per-sample file."""

from __future__ import annotations

import attrs
import polars as pl
import pytest

from mill.core.errors import SpecError
from mill.core.kinds.zero_shot import ZeroShotTask, kind, output_schema
from mill.core.registry import builtin_spec_dir
from mill.core.specfile import load_spec
from mill.core.task_kind import SAMPLE_COLUMNS


def _frame() -> pl.DataFrame:
    # Class 0 has three samples (two right), class 1 one (right): top-1 3/4, mean per-class recall (2/3 + 1) / 2.
    golds, predictions = [0, 0, 0, 1], [0, 0, 1, 1]
    return pl.DataFrame(
        {
            "key": ["a", "b", "c", "d"],
            "shard": ["s"] * 4,
            "gold": golds,
            "gold_label": ["x" if g == 0 else "y" for g in golds],
            "prediction": predictions,
            "prediction_label": ["x" if p == 0 else "y" for p in predictions],
            "top2": [[p, 1 - p] for p in predictions],
            "correct": [g == p for g, p in zip(golds, predictions, strict=True)],
        },
        schema=output_schema(2),
    )


def test_metric_names_top1_by_default() -> None:
    values = kind.metrics(_frame(), "acc", seed=0)
    assert list(values) == ["acc", "acc2", "mean_per_class_recall"]
    assert values["acc"].value == pytest.approx(3 / 4)
    assert values["mean_per_class_recall"].value == pytest.approx((2 / 3 + 1) / 2)


def test_mean_per_class_recall_as_the_headline_keeps_top1_as_acc() -> None:
    values = kind.metrics(_frame(), "mean_per_class_recall", seed=0)
    assert list(values) == ["mean_per_class_recall", "acc", "acc2"]
    assert values["mean_per_class_recall"].value == pytest.approx((2 / 3 + 1) / 2)
    assert values["acc"].value == pytest.approx(3 / 4)
    assert values["acc"] == kind.metrics(_frame(), "acc", seed=0)["acc"]


def test_a_spec_without_classes_has_no_zero_shot_variant() -> None:
    variant = kind.variant_type("zero_shot", "acc")
    assert kind.check_variant(variant, 3) == []
    ((key, message),) = kind.check_variant(variant, 0)
    assert key == "kind" and "this spec has none" in message


def _raw(metadata: list[list[int]]) -> pl.DataFrame:
    frame = _frame()
    columns = {"key": frame["key"], "shard": frame["shard"], "gold": frame["gold"], "topk": frame["top2"]}
    return pl.DataFrame({**columns, "metadata": metadata}, schema={**SAMPLE_COLUMNS, **kind.raw_schema})


def _task(metric: str, group_by: str | None) -> ZeroShotTask:
    return ZeroShotTask("b", "v", ("x", "y"), ("{c}",), 2, metadata_fields=("region", "year"), group_by=group_by)


def test_metadata_fields_become_columns_and_group_the_worst_group_metrics() -> None:
    # Regions: a and b in region 3 (both right), c and d in region 1 (c wrong): the worst region's top-1 is 1/2;
    # every sample's top-2 holds its gold, so the worst top-2 is 1.
    raw = _raw([[3, 2010], [3, 2011], [1, 2010], [1, 2012]])
    variant = kind.variant_type("zero_shot", "worst_group_acc")
    scored = kind.score(_task("worst_group_acc", "region"), variant, raw, seed=0)
    assert scored.frame["region"].to_list() == [3, 3, 1, 1] and scored.frame["year"].to_list()[0] == 2010
    assert scored.frame["group"].to_list() == [3, 3, 1, 1]
    assert list(scored.metrics) == ["worst_group_acc", "acc", "acc2", "mean_per_class_recall", "worst_group_acc2"]
    assert scored.metrics["worst_group_acc"].value == pytest.approx(1 / 2)
    assert scored.metrics["worst_group_acc2"].value == 1.0
    # mill verify recomputes them from the stored frame alone.
    assert kind.metrics(scored.frame, "worst_group_acc", seed=0) == scored.metrics


def test_macro_f1_as_the_headline() -> None:
    raw = _raw([[0, 0]] * 4)
    variant = kind.variant_type("zero_shot", "macro_f1")
    scored = kind.score(_task("macro_f1", None), variant, raw, seed=0)
    assert "group" not in scored.frame.columns
    assert list(scored.metrics) == ["macro_f1", "acc", "acc2", "mean_per_class_recall"]
    # Class x: TP 2, FP 0, FN 1 -> 4/5; class y: TP 1, FP 1, FN 0 -> 2/3.
    assert scored.metrics["macro_f1"].value == pytest.approx((4 / 5 + 2 / 3) / 2)


def test_a_worst_group_metric_needs_the_datasets_group() -> None:
    spec = load_spec(builtin_spec_dir() / "fmow.toml")
    assert spec.dataset.group_by == "region"
    assert kind.build_task(spec, "fmow", spec.variants["fmow"], 0).group_by == "region"
    ungrouped = attrs.evolve(spec, dataset=attrs.evolve(spec.dataset, group_by=None))
    with pytest.raises(SpecError, match=r"worst_group_acc needs dataset\.group_by"):
        kind.build_task(ungrouped, "fmow", spec.variants["fmow"], 0)
