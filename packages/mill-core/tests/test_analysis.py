"""The report's statistics on hand-made per-sample frames, where every number can be worked out by hand."""

from __future__ import annotations

import math

import polars as pl
import pytest

from mill.core import analysis
from mill.core.kinds import generative_mcq

CLASSES = ("cat", "dog", "fox")


def _zero_shot() -> pl.DataFrame:
    # cat: 2 of 2 right; dog: 1 of 4 (3 taken for fox); fox: 1 of 2 (1 taken for dog).
    gold = [0, 0, 1, 1, 1, 1, 2, 2]
    prediction = [0, 0, 1, 2, 2, 2, 2, 1]
    return pl.DataFrame(
        {
            "key": [f"s{i}" for i in range(8)],
            "shard": ["0.tar"] * 8,
            "gold": gold,
            "gold_label": [CLASSES[g] for g in gold],
            "prediction": prediction,
            "prediction_label": [CLASSES[p] for p in prediction],
            "top5": [[p, g] for p, g in zip(prediction, gold, strict=True)],
            "correct": [p == g for p, g in zip(prediction, gold, strict=True)],
        }
    )


def test_per_class_accuracy_is_worst_first_with_binomial_stderr() -> None:
    table = analysis.per_class_accuracy(_zero_shot(), CLASSES)
    assert table.get_column("label").to_list() == ["dog", "fox", "cat"]
    assert table.get_column("accuracy").to_list() == [0.25, 0.5, 1.0]
    assert table.get_column("stderr").to_list()[0] == pytest.approx(math.sqrt(0.25 * 0.75 / 4))


def test_confused_pairs_count_mistakes_most_frequent_first() -> None:
    pairs = analysis.confused_pairs(_zero_shot())
    assert pairs.rows() == [("dog", "fox", 3, 0.75), ("fox", "dog", 1, 0.5)]


def test_misclassified_spreads_its_pick_over_the_wrong_answers() -> None:
    assert analysis.misclassified(_zero_shot(), 2).get_column("key").to_list() == ["s3", "s5"]
    assert analysis.misclassified(_zero_shot(), 10).height == 4


def test_top_labels_names_the_classes() -> None:
    named = _zero_shot().select(analysis.top_labels(pl.col("top5"), CLASSES)).to_series()
    assert named.to_list()[3] == ["fox", "dog"]


def _mcq() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": ["a", "b", "c", "d"],
            "gold_letter": ["A", "B", "A", "C"],
            "options": [["x", "y", "z"]] * 4,
            "parsed_letter": ["A", "A", None, "C"],
            "response": ["A", "A", "no idea", "C"],
            "correct": [True, False, False, True],
        }
    )


def test_mcq_summary_and_unparsed_responses() -> None:
    summary = generative_mcq.mcq_summary(_mcq()).row(0, named=True)
    assert summary["accuracy"] == 0.5
    assert summary["stderr"] == pytest.approx(0.25)
    assert (summary["n_unparsed"], summary["unparsed_rate"]) == (1, 0.25)
    assert generative_mcq.unparsed_responses(_mcq()).rows() == [("c", "A", "no idea")]


def test_accuracy_by_gold_position_and_letters_chosen() -> None:
    by_position = generative_mcq.accuracy_by_gold_position(_mcq())
    assert by_position.select("gold_letter", "n", "accuracy").rows() == [("A", 2, 0.5), ("B", 1, 0.0), ("C", 1, 1.0)]
    chosen = generative_mcq.chosen_letters(_mcq())
    assert chosen.select("letter", "chosen", "gold").rows() == [
        ("A", 2, 2),
        ("B", 0, 1),
        ("C", 1, 1),
        (generative_mcq.UNPARSED, 1, 0),
    ]


def test_against_baseline_leaves_the_baseline_out_and_sorts_losses_first() -> None:
    base = analysis.per_class_accuracy(_zero_shot(), CLASSES)
    better = base.with_columns(pl.when(pl.col("label") == "dog").then(1.0).otherwise(0.0).alias("accuracy"))
    compared = analysis.against_baseline({"base": base, "other": better}, "base")
    assert compared.get_column("model").unique().to_list() == ["other"]
    assert compared.select("label", "delta").rows() == [("cat", -1.0), ("fox", -0.5), ("dog", 0.75)]
    with pytest.raises(KeyError):
        analysis.against_baseline({"base": base}, "missing")
