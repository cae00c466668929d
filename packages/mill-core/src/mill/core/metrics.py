"""Classification metrics and their bootstrap standard errors.

Every standard error is the standard deviation (ddof=1) of the metric over 1000 bootstrap
resamples of the samples, drawn with ``numpy.random.default_rng(seed)`` where ``seed`` is the
run's seed. All metrics of a run with the same seed and sample count see the same resamples, so
their errors are paired and a rerun reproduces them exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from attrs import frozen

N_RESAMPLES = 1000
"""Bootstrap resamples behind every reported standard error."""

# Resampled indices are drawn a chunk of rows at a time so memory stays near this many elements
# (32 MB of int64) however many samples there are.
_CHUNK_ELEMENTS = 4_000_000

IndexArray = npt.NDArray[np.intp]


@frozen
class MetricValue:
    """A metric over all samples, and its bootstrap standard error."""

    value: float
    stderr: float


def _as_1d(values: Sequence[int] | Sequence[bool] | npt.ArrayLike, what: str) -> npt.NDArray[np.generic]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{what} is empty: a metric needs at least one sample")
    return array


def _same_length(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic], what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} golds but {len(b)} predictions")


def _topk_hits(golds: npt.ArrayLike, topk_lists: npt.ArrayLike, k: int) -> npt.NDArray[np.bool_]:
    gold_array = _as_1d(golds, "golds")
    topk = np.asarray(topk_lists)
    if topk.ndim != 2 or len(topk) != len(gold_array):
        raise ValueError(f"top-k lists must have shape ({len(gold_array)}, K), got {topk.shape}")
    if not 1 <= k <= topk.shape[1]:
        # Scoring acc@k on fewer than k predictions would silently understate it.
        raise ValueError(f"k={k} but each top-k list holds {topk.shape[1]} predictions")
    hits: npt.NDArray[np.bool_] = (topk[:, :k] == gold_array[:, None]).any(axis=1)
    return hits


def class_ids(golds: npt.NDArray[np.generic]) -> tuple[npt.NDArray[np.intp], int]:
    """Golds as dense ids ``0..C-1`` over the classes present, and ``C``."""
    classes, ids = np.unique(golds, return_inverse=True)
    return ids.astype(np.intp).reshape(-1), len(classes)


def accuracy(correct: Sequence[bool] | npt.NDArray[np.bool_]) -> float:
    """Fraction of samples answered correctly.

    Raises:
        ValueError: if ``correct`` is empty or not one-dimensional.
    """
    return float(_as_1d(correct, "correct").astype(np.float64).mean())


def topk_accuracy(golds: npt.ArrayLike, topk_lists: npt.ArrayLike, k: int) -> float:
    """Fraction of samples whose gold class is among the first ``k`` of their predictions.

    ``topk_lists`` has one row per sample, best prediction first.

    Raises:
        ValueError: if shapes disagree, there are no samples, or a row holds fewer than ``k``.
    """
    return float(_topk_hits(golds, topk_lists, k).mean())


def mean_per_class_recall(golds: npt.ArrayLike, preds: npt.ArrayLike) -> float:
    """Mean over the classes present in ``golds`` of the fraction of that class predicted correctly.

    Classes that never occur as a gold label do not enter the mean. A prediction that matches no
    class (e.g. -1 for an unparsable answer) counts as wrong.

    Raises:
        ValueError: if the arrays differ in length or are empty.
    """
    gold_array = _as_1d(golds, "golds")
    pred_array = _as_1d(preds, "preds")
    _same_length(gold_array, pred_array, "mean_per_class_recall")
    ids, n_classes = class_ids(gold_array)
    counts = np.bincount(ids, minlength=n_classes)
    hits = np.bincount(ids, weights=(gold_array == pred_array).astype(np.float64), minlength=n_classes)
    return float((hits / counts).mean())


def resample_chunks(n: int, seed: int, n_resamples: int) -> Iterator[IndexArray]:
    """Bootstrap index rows, ``n_resamples`` in all, in chunks of shape ``(rows, n)``; a paired comparison
    draws them once for two runs' samples.

    The chunk size depends only on ``n``, so every caller with the same ``(n, seed, n_resamples)``
    gets the same resamples.
    """
    if n < 1:
        raise ValueError(f"cannot bootstrap {n} samples")
    if n_resamples < 2:
        raise ValueError(f"a bootstrap standard error needs at least 2 resamples, got {n_resamples}")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n), dtype=np.intp)


def _resampled_sums(
    ids: IndexArray, n_ids: int, weights: npt.NDArray[np.floating], chunk: IndexArray
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per resample in ``chunk`` (rows of sample indices) and per id ``0..n_ids-1``: how many drawn samples
    have that id, and the sum of their ``weights``; both of shape ``(rows, n_ids)``."""
    rows = len(chunk)
    # One bincount for the whole chunk: row r's id c lands in bin r * n_ids + c.
    bins = (ids[chunk] + (np.arange(rows, dtype=np.intp) * n_ids)[:, None]).ravel()
    counts = np.bincount(bins, minlength=rows * n_ids).reshape(rows, n_ids).astype(np.float64)
    sums: npt.NDArray[np.float64] = np.bincount(bins, weights=weights[chunk].ravel(), minlength=rows * n_ids).astype(
        np.float64
    )
    sums = sums.reshape(rows, n_ids)
    return counts, sums


def _resampled_group_means(
    ids: IndexArray, n_groups: int, hit: npt.NDArray[np.floating], chunk: IndexArray
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Per resample in ``chunk``: each group's mean of ``hit`` (0 where absent), and which groups are present."""
    counts, hits = _resampled_sums(ids, n_groups, hit, chunk)
    present = counts > 0
    return np.divide(hits, counts, out=np.zeros_like(hits), where=present), present


def resampled_class_recall(
    ids: IndexArray, n_classes: int, hit: npt.NDArray[np.floating], chunk: IndexArray
) -> npt.NDArray[np.float64]:
    """Mean per-class recall of each resample in ``chunk`` (rows of sample indices): ``ids`` are the samples'
    dense class ids ``0..n_classes-1`` and ``hit`` 1.0 where a sample was answered correctly. A class absent
    from a resample is left out of that resample's mean."""
    per_class, present = _resampled_group_means(ids, n_classes, hit, chunk)
    recall: npt.NDArray[np.float64] = per_class.sum(axis=1) / present.sum(axis=1)
    return recall


def _bootstrap_mean_stderr(values: npt.NDArray[np.floating], seed: int, n_resamples: int) -> float:
    means = np.concatenate([values[chunk].mean(axis=1) for chunk in resample_chunks(len(values), seed, n_resamples)])
    return float(np.std(means, ddof=1))


def accuracy_with_stderr(
    correct: Sequence[bool] | npt.NDArray[np.bool_], seed: int, n_resamples: int = N_RESAMPLES
) -> MetricValue:
    """:func:`accuracy` with its bootstrap standard error (1000 resamples seeded by the run's seed).

    Raises:
        ValueError: as :func:`accuracy`.
    """
    return mean_with_stderr(_as_1d(correct, "correct").astype(np.float64), seed, n_resamples)


def mean_with_stderr(
    values: Sequence[float] | npt.NDArray[np.floating], seed: int, n_resamples: int = N_RESAMPLES
) -> MetricValue:
    """The mean of a per-sample quantity (e.g. a probability) with its bootstrap standard error, resampled
    as every other metric of the run is.

    Raises:
        ValueError: if ``values`` is empty or not one-dimensional.
    """
    array = _as_1d(values, "values").astype(np.float64)
    return MetricValue(float(array.mean()), _bootstrap_mean_stderr(array, seed, n_resamples))


def topk_accuracy_with_stderr(
    golds: npt.ArrayLike, topk_lists: npt.ArrayLike, k: int, seed: int, n_resamples: int = N_RESAMPLES
) -> MetricValue:
    """:func:`topk_accuracy` with its bootstrap standard error (1000 resamples seeded by the run's seed).

    Raises:
        ValueError: as :func:`topk_accuracy`.
    """
    hits = _topk_hits(golds, topk_lists, k).astype(np.float64)
    return MetricValue(float(hits.mean()), _bootstrap_mean_stderr(hits, seed, n_resamples))


def mean_per_class_recall_with_stderr(
    golds: npt.ArrayLike, preds: npt.ArrayLike, seed: int, n_resamples: int = N_RESAMPLES
) -> MetricValue:
    """:func:`mean_per_class_recall` with its bootstrap standard error.

    1000 resamples seeded by the run's seed; a class absent from a resample is left out of that
    resample's mean, as :func:`mean_per_class_recall` leaves out classes absent from the golds.

    Raises:
        ValueError: as :func:`mean_per_class_recall`.
    """
    gold_array = _as_1d(golds, "golds")
    pred_array = _as_1d(preds, "preds")
    _same_length(gold_array, pred_array, "mean_per_class_recall")
    ids, n_classes = class_ids(gold_array)
    hit = (gold_array == pred_array).astype(np.float64)

    recalls = [
        resampled_class_recall(ids, n_classes, hit, chunk) for chunk in resample_chunks(len(ids), seed, n_resamples)
    ]
    stderr = float(np.std(np.concatenate(recalls), ddof=1))
    return MetricValue(mean_per_class_recall(gold_array, pred_array), stderr)


def pooled_rates_with_stderr(
    parts: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]], seed: int, n_resamples: int = N_RESAMPLES
) -> MetricValue:
    """The mean over ``parts`` of each part's pooled rate ``sum(hits) / sum(counts)``, with its bootstrap
    standard error.

    Every part has one entry per sample: a sample holds ``counts[i]`` queries of which ``hits[i]`` were
    answered correctly (an image's captions, say), so a rate over queries is pooled over samples, and a
    resample draws whole samples (a sample's queries stay together) with the same indices for every part
    as every other metric of the run. One part whose counts are all 1 is the plain mean of ``hits``.

    Raises:
        ValueError: no parts; a part's arrays are empty, not one-dimensional or of different lengths than
            the others; a part holds no query at all.
    """
    if not parts:
        raise ValueError("pooled_rates_with_stderr needs at least one part")
    arrays = []
    for hits, counts in parts:
        hit_array = _as_1d(hits, "hits").astype(np.float64)
        count_array = _as_1d(counts, "counts").astype(np.float64)
        _same_length(hit_array, count_array, "pooled_rates_with_stderr")
        if len(hit_array) != len(_as_1d(parts[0][0], "hits")):
            raise ValueError("pooled_rates_with_stderr: every part needs one entry per sample")
        if count_array.sum() <= 0:
            raise ValueError("pooled_rates_with_stderr: a part holds no query")
        arrays.append((hit_array, count_array))
    value = float(np.mean([hit.sum() / count.sum() for hit, count in arrays]))
    resampled = []
    for chunk in resample_chunks(len(arrays[0][0]), seed, n_resamples):
        rates = [hit[chunk].sum(axis=1) / count[chunk].sum(axis=1) for hit, count in arrays]
        resampled.append(np.mean(rates, axis=0))
    return MetricValue(value, float(np.std(np.concatenate(resampled), ddof=1)))


def worst_group_accuracy(hits: npt.ArrayLike, groups: npt.ArrayLike) -> float:
    """The lowest accuracy of any group present: ``hits`` holds 1 where a sample was answered correctly (top-1
    or top-k), ``groups`` each sample's group. This is the WILDS package's worst-group metric
    (``Metric.compute_group_wise`` over the non-empty groups), which DataComp reports for FMoW's regions and the
    geographic datasets.

    Raises:
        ValueError: the arrays are empty, not one-dimensional or of different lengths.
    """
    hit_array = _as_1d(hits, "hits").astype(np.float64)
    group_array = _as_1d(groups, "groups")
    _same_length(group_array, hit_array, "worst_group_accuracy")
    ids, n_groups = class_ids(group_array)
    counts = np.bincount(ids, minlength=n_groups)
    return float((np.bincount(ids, weights=hit_array, minlength=n_groups) / counts).min())


def worst_group_accuracy_with_stderr(
    hits: npt.ArrayLike, groups: npt.ArrayLike, seed: int, n_resamples: int = N_RESAMPLES
) -> MetricValue:
    """:func:`worst_group_accuracy` with its bootstrap standard error; a group absent from a resample is left
    out of that resample's minimum.

    Raises:
        ValueError: as :func:`worst_group_accuracy`.
    """
    value = worst_group_accuracy(hits, groups)
    hit_array = np.asarray(hits, dtype=np.float64)
    ids, n_groups = class_ids(np.asarray(groups))
    worst = []
    for chunk in resample_chunks(len(ids), seed, n_resamples):
        means, present = _resampled_group_means(ids, n_groups, hit_array, chunk)
        worst.append(np.where(present, means, np.inf).min(axis=1))
    return MetricValue(value, float(np.std(np.concatenate(worst), ddof=1)))


def _f1_ids(golds: npt.ArrayLike, preds: npt.ArrayLike) -> tuple[IndexArray, IndexArray, int, int]:
    """Golds and predictions as dense ids over the classes either holds, the gold classes first: (gold ids,
    prediction ids, how many gold classes, how many classes in all)."""
    gold_array = _as_1d(golds, "golds")
    pred_array = _as_1d(preds, "preds")
    _same_length(gold_array, pred_array, "macro_f1")
    gold_classes = np.unique(gold_array)
    others = np.setdiff1d(np.unique(pred_array), gold_classes)
    classes = np.concatenate([gold_classes, others])
    order = np.argsort(classes, kind="stable")
    to_id = order[np.searchsorted(classes[order], np.concatenate([gold_array, pred_array]))].astype(np.intp)
    return to_id[: len(gold_array)], to_id[len(gold_array) :], len(gold_classes), len(classes)


def macro_f1(golds: npt.ArrayLike, preds: npt.ArrayLike) -> float:
    """The mean over the classes present in ``golds`` of each class's F1 score, ``2 TP / (2 TP + FP + FN)``:
    scikit-learn's ``f1_score(golds, preds, average="macro", labels=unique(golds))``, which the WILDS package's
    ``F1(average="macro")`` computes and DataComp reports for iWildCam. A prediction of a class absent from the
    golds counts as a false positive of no scored class.

    Raises:
        ValueError: if the arrays differ in length or are empty.
    """
    gold_ids, pred_ids, n_gold, n_all = _f1_ids(golds, preds)
    hit = (gold_ids == pred_ids).astype(np.float64)
    true_positives = np.bincount(gold_ids, weights=hit, minlength=n_all)[:n_gold]
    # 2 TP + FP + FN = (TP + FN) + (TP + FP): the class's gold count plus its prediction count.
    support = np.bincount(gold_ids, minlength=n_all)[:n_gold] + np.bincount(pred_ids, minlength=n_all)[:n_gold]
    return float((2 * true_positives / support).mean())


def macro_f1_with_stderr(
    golds: npt.ArrayLike, preds: npt.ArrayLike, seed: int, n_resamples: int = N_RESAMPLES
) -> MetricValue:
    """:func:`macro_f1` with its bootstrap standard error; each resample averages over the classes its own golds
    hold, as :func:`macro_f1` does.

    Raises:
        ValueError: as :func:`macro_f1`.
    """
    value = macro_f1(golds, preds)
    gold_ids, pred_ids, _, n_all = _f1_ids(golds, preds)
    hit = (gold_ids == pred_ids).astype(np.float64)
    ones = np.ones(len(gold_ids))
    scores = []
    for chunk in resample_chunks(len(gold_ids), seed, n_resamples):
        gold_counts, true_positives = _resampled_sums(gold_ids, n_all, hit, chunk)
        pred_counts, _ = _resampled_sums(pred_ids, n_all, ones, chunk)
        present = gold_counts > 0
        f1 = np.divide(2 * true_positives, gold_counts + pred_counts, out=np.zeros_like(true_positives), where=present)
        scores.append(f1.sum(axis=1) / present.sum(axis=1))
    return MetricValue(value, float(np.std(np.concatenate(scores), ddof=1)))
