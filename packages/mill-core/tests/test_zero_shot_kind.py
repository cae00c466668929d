"""The zero_shot kind's metrics: top-1 under the variant's metric name, or, for a variant whose metric is
``mean_per_class_recall`` (DataComp's main metric on some datasets), that recall as the headline."""

from __future__ import annotations

import polars as pl
import pytest

from mill.core.kinds.zero_shot import kind, output_schema


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
