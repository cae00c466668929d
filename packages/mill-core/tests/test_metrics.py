"""Tests for mill.core.metrics: point metrics on hand-computed cases and bootstrap standard errors."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from mill.core.metrics import (
    MetricValue,
    accuracy,
    accuracy_with_stderr,
    macro_f1,
    macro_f1_with_stderr,
    mean_per_class_recall,
    mean_per_class_recall_with_stderr,
    topk_accuracy,
    topk_accuracy_with_stderr,
    worst_group_accuracy,
    worst_group_accuracy_with_stderr,
)
from mill.testing.bootstrap import bootstrap_stderr

# --- Point metrics --------------------------------------------------------------------------------


def test_accuracy_hand_computed() -> None:
    assert accuracy([True, False, True, True]) == 0.75
    assert accuracy(np.array([False, False])) == 0.0
    assert accuracy([True]) == 1.0


def test_topk_accuracy_hand_computed() -> None:
    golds = [3, 1, 2, 0]
    topk = [
        [3, 0, 1],  # hit at rank 1
        [0, 1, 2],  # hit at rank 2
        [0, 1, 4],  # miss
        [1, 2, 0],  # hit at rank 3
    ]
    assert topk_accuracy(golds, topk, 1) == 0.25
    assert topk_accuracy(golds, topk, 2) == 0.5
    assert topk_accuracy(golds, topk, 3) == 0.75


def test_mean_per_class_recall_hand_computed() -> None:
    # Class 0: 2 of 3 right; class 1: 0 of 1; class 5: 1 of 1. Class 2 is predicted but never gold.
    golds = [0, 0, 0, 1, 5]
    preds = [0, 0, 2, 2, 5]
    assert mean_per_class_recall(golds, preds) == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_mean_per_class_recall_unparsable_prediction_is_wrong() -> None:
    assert mean_per_class_recall([0, 1], [-1, 1]) == 0.5


def test_mean_per_class_recall_differs_from_accuracy_when_imbalanced() -> None:
    golds = [0] * 9 + [1]
    preds = [0] * 9 + [0]
    assert accuracy([g == p for g, p in zip(golds, preds, strict=True)]) == 0.9
    assert mean_per_class_recall(golds, preds) == 0.5


@pytest.mark.parametrize(
    "call",
    [
        lambda: accuracy([]),
        lambda: accuracy([[True]]),  # type: ignore[list-item]
        lambda: topk_accuracy([0, 1], [[0, 1]], 1),
        lambda: topk_accuracy([0], [[0, 1]], 3),
        lambda: topk_accuracy([0], [[0, 1]], 0),
        lambda: mean_per_class_recall([0, 1], [0]),
        lambda: mean_per_class_recall([], []),
    ],
)
def test_bad_inputs_raise(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


# --- Bootstrap ------------------------------------------------------------------------------------


def _random_correct(n: int, p: float, seed: int = 0) -> npt.NDArray[np.bool_]:
    return np.random.default_rng(seed).random(n) < p


def test_bootstrap_is_deterministic_per_seed() -> None:
    correct = _random_correct(500, 0.6)
    first = accuracy_with_stderr(correct, seed=42)
    assert accuracy_with_stderr(correct, seed=42) == first
    assert accuracy_with_stderr(correct, seed=43).stderr != first.stderr
    assert first.value == accuracy(correct)


def test_generic_bootstrap_matches_vectorised() -> None:
    correct = _random_correct(300, 0.4)
    values = correct.astype(float)
    generic = bootstrap_stderr(lambda idx: float(values[idx].mean()), len(values), seed=7)
    assert generic == pytest.approx(accuracy_with_stderr(correct, seed=7).stderr, rel=1e-12)


def test_generic_bootstrap_definition() -> None:
    """1000 resamples of indices from default_rng(seed); std with ddof=1."""
    values = np.arange(20, dtype=float)
    rng = np.random.default_rng(3)
    indices = rng.integers(0, 20, size=(1000, 20), dtype=np.intp)
    expected = float(np.std(values[indices].mean(axis=1), ddof=1))
    assert bootstrap_stderr(lambda idx: float(values[idx].mean()), 20, seed=3) == pytest.approx(expected)


def test_bootstrap_constant_metric_has_zero_stderr() -> None:
    assert accuracy_with_stderr([True] * 50, seed=0) == MetricValue(1.0, 0.0)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_stderr_close_to_analytic(p: float) -> None:
    n = 20_000
    correct = _random_correct(n, p, seed=1)
    result = accuracy_with_stderr(correct, seed=0)
    analytic = math.sqrt(result.value * (1 - result.value) / n)
    assert result.stderr == pytest.approx(analytic, rel=0.1)


def test_topk_stderr_is_stderr_of_hits() -> None:
    rng = np.random.default_rng(5)
    golds = rng.integers(0, 10, size=400)
    topk = rng.integers(0, 10, size=(400, 5))
    hits = (topk[:, :5] == golds[:, None]).any(axis=1)
    result = topk_accuracy_with_stderr(golds, topk, 5, seed=9)
    assert result.value == topk_accuracy(golds, topk, 5)
    assert result.stderr == accuracy_with_stderr(hits, seed=9).stderr


def test_per_class_recall_stderr_matches_generic_bootstrap() -> None:
    rng = np.random.default_rng(11)
    golds = rng.integers(0, 8, size=200)
    preds = np.where(rng.random(200) < 0.7, golds, rng.integers(0, 8, size=200))
    result = mean_per_class_recall_with_stderr(golds, preds, seed=4)
    generic = bootstrap_stderr(lambda idx: mean_per_class_recall(golds[idx], preds[idx]), 200, seed=4)
    assert result.value == mean_per_class_recall(golds, preds)
    assert result.stderr == pytest.approx(generic, rel=1e-12)


def test_per_class_recall_bootstrap_skips_absent_classes() -> None:
    # A rare class is often missing from a resample; those resamples average the other classes only.
    # A NaN or a silent zero for the missing class would break the match with the generic bootstrap.
    golds = np.array([0] * 30 + [1] * 30 + [2])
    preds = np.array([0] * 30 + [0] * 15 + [1] * 15 + [2])
    result = mean_per_class_recall_with_stderr(golds, preds, seed=2)
    generic = bootstrap_stderr(lambda idx: mean_per_class_recall(golds[idx], preds[idx]), len(golds), seed=2)
    assert math.isfinite(result.stderr)
    assert result.stderr == pytest.approx(generic, rel=1e-12)
    assert result.value == pytest.approx((1 + 0.5 + 1) / 3)


def test_bootstrap_needs_two_resamples_and_a_sample() -> None:
    with pytest.raises(ValueError):
        accuracy_with_stderr([True, False], seed=0, n_resamples=1)
    with pytest.raises(ValueError):
        bootstrap_stderr(lambda idx: 0.0, 0, seed=0)


def test_bootstrap_is_fast_for_imagenet_size() -> None:
    n = 50_000
    rng = np.random.default_rng(0)
    golds = rng.integers(0, 1000, size=n)
    topk = rng.integers(0, 1000, size=(n, 5))
    topk[: n // 2, 0] = golds[: n // 2]
    start = time.perf_counter()
    acc1 = topk_accuracy_with_stderr(golds, topk, 1, seed=0)
    acc5 = topk_accuracy_with_stderr(golds, topk, 5, seed=0)
    recall = mean_per_class_recall_with_stderr(golds, topk[:, 0], seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"bootstrap of 50,000 samples took {elapsed:.1f}s"
    assert 0.49 < acc1.value < 0.52
    assert 0 < acc1.stderr < 0.01
    assert acc5.value >= acc1.value
    assert 0 < recall.stderr < 0.01


# --- Worst-group accuracy and macro F1 (DataComp's WILDS and geographic metrics) --------------------------


def test_worst_group_accuracy_hand_computed() -> None:
    # Group 7: 2 of 3 right; group 2: 1 of 2; group 5: 1 of 1. The worst is group 2's 0.5.
    hits = [1, 1, 0, 1, 0, 1]
    groups = [7, 7, 7, 2, 2, 5]
    assert worst_group_accuracy(hits, groups) == 0.5
    assert worst_group_accuracy([1, 0], [0, 0]) == 0.5  # a single group is the plain accuracy


def test_macro_f1_hand_computed() -> None:
    # Class 0: TP 1, FP 1 (a 1 predicted 0), FN 1 (a 0 predicted 2) -> F1 = 2/(2+1+1) = 0.5.
    # Class 1: TP 1, FP 0, FN 1 -> 2/3. Class 2 is never gold: its false positive counts against class 0's
    # recall only, and it enters no mean (scikit-learn's labels=unique(golds)).
    golds = [0, 0, 1, 1]
    preds = [0, 2, 1, 0]
    assert macro_f1(golds, preds) == pytest.approx((0.5 + 2 / 3) / 2)
    assert macro_f1([3, 3], [3, 3]) == 1.0
    assert macro_f1([3, 4], [4, 3]) == 0.0


@pytest.mark.parametrize("seed", [0, 11])
def test_group_and_f1_stderrs_equal_the_per_resample_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    golds = rng.integers(0, 6, 80)
    preds = np.where(rng.random(80) < 0.6, golds, rng.integers(0, 8, 80))
    groups = rng.integers(0, 4, 80)
    hits = (golds == preds).astype(float)
    worst = worst_group_accuracy_with_stderr(hits, groups, seed, n_resamples=50)
    assert worst.value == worst_group_accuracy(hits, groups)
    assert worst.stderr == pytest.approx(
        bootstrap_stderr(lambda rows: worst_group_accuracy(hits[rows], groups[rows]), 80, seed, 50)
    )
    f1 = macro_f1_with_stderr(golds, preds, seed, n_resamples=50)
    assert f1.value == macro_f1(golds, preds)
    assert f1.stderr == pytest.approx(bootstrap_stderr(lambda rows: macro_f1(golds[rows], preds[rows]), 80, seed, 50))
