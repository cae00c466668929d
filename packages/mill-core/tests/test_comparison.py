"""Tests for mill.core.comparison: paired differences, McNemar's exact test, and runs read back from a store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import binomtest

from mill.core.comparison import (
    ComparedRun,
    ComparisonError,
    class_labels,
    compare,
    compare_runs,
    mcnemar_exact,
    stored_runs,
)
from mill.core.metrics import mean_per_class_recall
from mill.testing.facts import store_run

N_SAMPLES = 600
N_CLASSES = 30


def per_sample(seed: int = 0, n: int = N_SAMPLES) -> pl.DataFrame:
    """A zero-shot per-sample frame: about 70% right, top-5 lists holding the prediction first."""
    rng = np.random.default_rng(seed)
    gold = np.arange(n) % N_CLASSES
    correct = rng.random(n) < 0.7
    prediction = np.where(correct, gold, (gold + 1) % N_CLASSES)
    top5 = [[int(p), *[(int(p) + j) % N_CLASSES for j in (2, 3, 4, 5)]] for p in prediction]
    return pl.DataFrame(
        {
            "key": [f"s{i:07d}" for i in range(n)],
            "gold": gold,
            "gold_label": [f"class {g}" for g in gold],
            "prediction": prediction,
            "correct": correct,
            "top5": top5,
        }
    )


def flipped(frame: pl.DataFrame, rows: list[int]) -> pl.DataFrame:
    """``frame`` with the answers of ``rows`` turned from right to wrong or wrong to right."""
    flip = pl.Series(np.isin(np.arange(frame.height), rows))
    return frame.with_columns(correct=pl.col("correct") ^ flip)


def run(name: str, samples: pl.DataFrame, **changes: str) -> ComparedRun:
    fields = {"benchmark": "imagenet", "variant": "imagenet", "spec_hash": "h1"} | changes
    return ComparedRun(name=name, samples=samples, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [1, 7, 40])
def test_k_flipped_answers_are_k_discordant_pairs(k: int) -> None:
    base = per_sample()
    rows = list(np.random.default_rng(k).choice(N_SAMPLES, size=k, replace=False))
    other = flipped(base, rows)
    comparison = compare(run("base", base), run("other", other), n_resamples=2000)

    test = comparison.mcnemar
    assert test.discordant == k
    became_right = int((~base["correct"].gather(rows)).sum())
    assert (test.baseline_only, test.other_only) == (k - became_right, became_right)
    assert test.p_value == pytest.approx(binomtest(test.other_only, k, 0.5).pvalue, rel=1e-9)

    accuracy = comparison.metric("accuracy")
    true_difference = float(other["correct"].mean() - base["correct"].mean())  # type: ignore[operator]
    assert accuracy["difference"] == pytest.approx(true_difference)
    assert accuracy["ci_low"] <= true_difference <= accuracy["ci_high"]
    assert accuracy["ci_low"] < accuracy["ci_high"]
    assert comparison.n_shared == N_SAMPLES and comparison.n_baseline_only == comparison.n_other_only == 0


def test_identical_runs_differ_by_nothing() -> None:
    base = per_sample()
    comparison = compare(run("a", base), run("b", base))
    assert comparison.n_resamples == 10_000  # the default
    for row in comparison.metrics.iter_rows(named=True):
        assert (row["difference"], row["ci_low"], row["ci_high"]) == (0.0, 0.0, 0.0), row["metric"]
    assert (comparison.mcnemar.discordant, comparison.mcnemar.p_value) == (0, 1.0)
    assert set(comparison.classes["difference"]) == {0.0}


def test_mcnemar_closed_form() -> None:
    # Two discordant pairs both favouring one run: p = 2 * (1/2)^2; one each: p = 1.
    assert mcnemar_exact(2, 0) == 0.5
    assert mcnemar_exact(1, 1) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(3, 9) == pytest.approx(2 * sum(math.comb(12, i) for i in range(4)) / 4096)
    # Thousands of pairs stay exact (no float overflow in the binomial coefficients).
    assert mcnemar_exact(2000, 2150) == pytest.approx(binomtest(2000, 4150, 0.5).pvalue, rel=1e-9)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_every_shared_metric_is_compared_and_mean_per_class_recall_is_recomputed() -> None:
    base, other = per_sample(0), per_sample(1)
    comparison = compare(run("a", base), run("b", other), n_resamples=500)
    assert comparison.metrics["metric"].to_list() == ["accuracy", "mean_per_class_recall", "acc5"]
    recall = comparison.metric("mean_per_class_recall")
    for frame, column in ((base, "baseline"), (other, "other")):
        predictions = np.where(frame["correct"].to_numpy(), frame["gold"].to_numpy(), -1)
        assert recall[column] == pytest.approx(mean_per_class_recall(frame["gold"].to_numpy(), predictions))
    assert recall["ci_low"] <= recall["difference"] <= recall["ci_high"]
    top5 = comparison.metric("acc5")
    assert top5["baseline"] == pytest.approx(
        np.mean([g in t for g, t in zip(base["gold"], base["top5"].to_list(), strict=True)])
    )


def test_intervals_are_seeded() -> None:
    base, other = per_sample(0), per_sample(1)
    first = compare(run("a", base), run("b", other), seed=3, n_resamples=500)
    assert compare(run("a", base), run("b", other), seed=3, n_resamples=500).metrics.equals(first.metrics)
    assert not compare(run("a", base), run("b", other), seed=4, n_resamples=500).metrics.equals(first.metrics)


def test_classes_that_differ_most() -> None:
    base = per_sample()
    # Class 5 loses every right answer; class 9 gains two.
    class5 = [i for i in range(N_SAMPLES) if i % N_CLASSES == 5 and base["correct"][i]]
    class9 = [i for i in range(N_SAMPLES) if i % N_CLASSES == 9 and not base["correct"][i]][:2]
    comparison = compare(run("a", base), run("b", flipped(base, class5 + class9)), n_resamples=200)
    classes = comparison.classes
    assert classes.height == 10
    assert classes.row(0, named=True) == {
        "gold": 5,
        "label": "class 5",
        "n": N_SAMPLES // N_CLASSES,
        "baseline": len(class5) / (N_SAMPLES // N_CLASSES),
        "other": 0.0,
        "difference": -len(class5) / (N_SAMPLES // N_CLASSES),
    }
    assert classes.row(1, named=True)["gold"] == 9
    assert classes["difference"].abs().to_list() == sorted(classes["difference"].abs().to_list(), reverse=True)


def test_only_shared_samples_are_compared() -> None:
    base = per_sample()
    other = per_sample().slice(100)  # the first 100 samples missing
    extra = per_sample(n=N_SAMPLES + 50).slice(N_SAMPLES).with_columns(pl.lit(True).alias("correct"))
    comparison = compare(run("a", base), run("b", pl.concat([other, extra])), n_resamples=200)
    assert (comparison.n_shared, comparison.n_baseline_only, comparison.n_other_only) == (500, 100, 50)
    assert comparison.metric("accuracy")["baseline"] == pytest.approx(base["correct"].slice(100).mean())
    assert comparison.metric("accuracy")["difference"] == 0.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"spec_hash": "h2"}, "different versions of benchmark imagenet"),
        ({"benchmark": "imagenet_a"}, "only runs of one benchmark"),
    ],
)
def test_runs_of_other_benchmarks_or_versions_are_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ComparisonError, match=message):
        compare(run("a", per_sample()), run("b", per_sample(), **changes))
    with pytest.raises(ComparisonError, match=message):
        compare_runs([run("a", per_sample()), run("b", per_sample()), run("c", per_sample(), **changes)])


def test_variants_of_one_benchmark_on_the_same_samples_compare() -> None:
    comparison = compare(run("a", per_sample()), run("b", per_sample(), variant="imagenet_mcq"), n_resamples=200)
    assert comparison.n_shared == N_SAMPLES


def test_no_shared_sample_or_another_gold_is_refused() -> None:
    base = per_sample()
    with pytest.raises(ComparisonError, match="share no sample key"):
        compare(run("a", base), run("b", base.with_columns(pl.col("key") + "x")))
    with pytest.raises(ComparisonError, match="different gold classes"):
        compare(run("a", base), run("b", base.with_columns(pl.col("gold") + 1)))
    with pytest.raises(ComparisonError, match="two runs or more"):
        compare_runs([run("a", base)])


def test_several_runs_are_each_compared_with_the_first() -> None:
    base = per_sample()
    runs = [run("a", base), run("b", flipped(base, [1, 2])), run("c", flipped(base, [3]))]
    comparisons = compare_runs(runs, n_resamples=200)
    assert [(c.baseline, c.other, c.mcnemar.discordant) for c in comparisons] == [("a", "b", 2), ("a", "c", 1)]
    # The tables mill compare prints from these are tested with the CLI (mill-cli tests/test_tables.py).


def test_stored_runs_by_model_or_run_id(tmp_path: Path) -> None:
    base = per_sample()
    store_run(tmp_path, base, model="org/base", run_id="r-base")
    store_run(tmp_path, flipped(base, [5, 6, 7]), model="org/other", run_id="r-other")
    store_run(tmp_path, base.head(50), model="org/other", run_id="r-smoke", limit=50)

    runs = stored_runs(tmp_path, ["org/base", "r-other"])
    assert [(r.name, r.run_id, r.spec_hash) for r in runs] == [
        ("org/base imagenet", "r-base", "spec-v1"),
        ("org/other imagenet", "r-other", "spec-v1"),
    ]
    assert runs[1].samples.equals(flipped(base, [5, 6, 7]))
    assert compare_runs(runs, n_resamples=200)[0].mcnemar.discordant == 3

    with pytest.raises(ComparisonError, match=r"'org/other' names 2 runs: .*run id r-other.*run id r-smoke"):
        stored_runs(tmp_path, ["org/other"], include_all=True)
    with pytest.raises(ComparisonError, match="is named 'org/none'"):
        stored_runs(tmp_path, ["org/none"])
    assert stored_runs(tmp_path, ["r-smoke"])[0].samples.height == 50


def test_class_labels_from_the_frame() -> None:
    assert class_labels(per_sample())[:3] == ("class 0", "class 1", "class 2")
    mcq = pl.DataFrame({"gold": [2], "options": [["two", "zero"]], "option_indices": [[2, 0]]})
    assert class_labels(mcq) == ("zero", "1", "two")
