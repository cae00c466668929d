"""Paired comparison of runs of one benchmark over the samples they share (``mill compare``).

Two models evaluated on the same samples differ by less noise than two independent samples would: a paired
test asks whether the difference holds on these very samples. For each metric, the difference (other run
minus baseline) comes with a percentile interval from a paired bootstrap: the same resampled sample indices
for both runs, seeded, so a rerun reproduces it. A metric that is not a mean over samples (mean per-class
recall) is recomputed on every resample. Accuracy also gets McNemar's exact test: under the hypothesis that
both runs are equally accurate, a sample that one run gets right and the other wrong (a discordant pair) is
equally likely to favour either, so the count favouring one is binomial(discordant, 1/2).

Everything here is a pure function of per-sample frames (docs/outputs.md); :func:`stored_runs` reads them
from a results directory and :func:`compared_run` takes them from :func:`~mill.core.evaluate`'s result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from attrs import frozen

from mill.core.errors import MillError
from mill.core.metrics import class_ids, resample_chunks, resampled_class_recall
from mill.core.record import RunRecord
from mill.core.results import read_aggregate
from mill.core.results_dir import ResultsDir

DEFAULT_RESAMPLES = 10_000
"""Paired bootstrap resamples behind every interval, unless the caller asks for another number."""
DEFAULT_CONFIDENCE = 0.95
N_CLASSES = 10
"""How many classes a comparison lists: those whose accuracy differs most between the two runs."""
ACCURACY = "accuracy"
# A model with its run's settings: "mill-shapes/mill-shapes[precision=fp32]".
_NAMED_SETTINGS = re.compile(r"(?P<model>[^\[\]]+)\[(?P<settings>[^\[\]]*)\]")
_TOPK = re.compile(r"top(?P<k>\d+)_a")


class ComparisonError(MillError):
    """Runs that cannot be compared (different benchmarks or benchmark versions, no shared samples), or a run
    name that names no stored run or several."""


@frozen
class ComparedRun:
    """One run as a comparison sees it: a display name, what it ran, and its per-sample frame (columns
    ``key``, ``gold`` and ``correct`` at least; see docs/outputs.md)."""

    name: str
    benchmark: str
    variant: str
    spec_hash: str | None
    samples: pl.DataFrame
    run_id: str = ""


@frozen
class McNemarTest:
    """McNemar's exact test on a comparison's shared samples: ``baseline_only`` samples only the baseline
    answered correctly, ``other_only`` only the other run, and the two-sided exact ``p_value``."""

    baseline_only: int
    other_only: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.baseline_only + self.other_only


@frozen
class Comparison:
    """``other`` against ``baseline`` over the samples both scored.

    ``metrics`` has one row per metric both runs have: ``metric``, ``baseline``, ``other``, ``difference``
    (other − baseline), ``ci_low``, ``ci_high`` (the paired bootstrap interval of the difference). ``classes``
    lists the :data:`N_CLASSES` gold classes whose accuracy differs most: ``gold``, ``label``, ``n``,
    ``baseline``, ``other``, ``difference``, largest absolute difference first.
    """

    baseline: str
    other: str
    n_shared: int
    n_baseline_only: int
    n_other_only: int
    metrics: pl.DataFrame
    mcnemar: McNemarTest
    classes: pl.DataFrame
    seed: int
    n_resamples: int
    confidence: float

    def metric(self, name: str) -> dict[str, Any]:
        """The row of metric ``name``.

        Raises:
            KeyError: the two runs share no such metric.
        """
        rows = self.metrics.filter(pl.col("metric") == name).to_dicts()
        if not rows:
            raise KeyError(f"no metric {name!r}; compared: {', '.join(self.metrics['metric'])}")
        return rows[0]


def mcnemar_exact(baseline_only: int, other_only: int) -> float:
    """The two-sided exact McNemar p-value of ``baseline_only`` and ``other_only`` discordant pairs:
    ``min(1, 2 P[X <= min(b, c)])`` for ``X ~ binomial(b + c, 1/2)``, computed in exact integers; 1 when
    there is no discordant pair.

    Raises:
        ValueError: a negative count.
    """
    if baseline_only < 0 or other_only < 0:
        raise ValueError(f"discordant counts must be non-negative, got {baseline_only} and {other_only}")
    n, k = baseline_only + other_only, min(baseline_only, other_only)
    term, tail = 1, 1  # C(n, 0), then the running sum of C(n, i) for i <= k
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / (1 << n))


def _paired_metrics(
    joined: pl.DataFrame,
) -> dict[str, tuple[float, float, Callable[[npt.NDArray[np.intp]], npt.NDArray[np.float64]]]]:
    """Each metric both runs of ``joined`` (columns suffixed ``_a`` and ``_b``) have: its two values and a
    function giving the difference b − a on each resample of a chunk of index rows."""
    metrics: dict[str, tuple[float, float, Callable[[npt.NDArray[np.intp]], npt.NDArray[np.float64]]]] = {}

    def mean_metric(name: str, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> None:
        difference = b - a
        metrics[name] = (float(a.mean()), float(b.mean()), lambda chunk: difference[chunk].mean(axis=1))

    hit_a = joined["correct_a"].cast(pl.Float64).to_numpy()
    hit_b = joined["correct_b"].cast(pl.Float64).to_numpy()
    mean_metric(ACCURACY, hit_a, hit_b)
    ids, n_classes = class_ids(joined["gold"].to_numpy())

    def recall(hit: npt.NDArray[np.float64]) -> float:
        return float(resampled_class_recall(ids, n_classes, hit, np.arange(len(ids), dtype=np.intp)[None, :])[0])

    metrics["mean_per_class_recall"] = (
        recall(hit_a),
        recall(hit_b),
        lambda chunk: (
            resampled_class_recall(ids, n_classes, hit_b, chunk) - resampled_class_recall(ids, n_classes, hit_a, chunk)
        ),
    )
    columns = set(joined.columns)
    if {"parsed_letter_a", "parsed_letter_b"} <= columns:
        unparsed = [joined[f"parsed_letter_{side}"].is_null().cast(pl.Float64).to_numpy() for side in "ab"]
        mean_metric("unparsed_rate", *unparsed)
    if {"letter_mass_a", "letter_mass_b"} <= columns:
        mean_metric("letter_mass", *(joined[f"letter_mass_{side}"].cast(pl.Float64).to_numpy() for side in "ab"))
    for column in sorted(columns):
        # Top-k accuracy of two zero-shot runs that kept the same k classes per sample.
        top = _TOPK.fullmatch(column)
        if top is not None and int(top.group("k")) > 1 and f"top{top.group('k')}_b" in columns:
            hits = [
                joined.select(pl.col(f"top{top.group('k')}_{side}").list.contains(pl.col("gold")).cast(pl.Float64))
                .to_series()
                .to_numpy()
                for side in "ab"
            ]
            mean_metric(f"acc{top.group('k')}", *hits)
    return metrics


def _class_labels(frame: pl.DataFrame) -> dict[int, str]:
    """Gold class index → name, as the per-sample frame itself names them."""
    if "gold_label" in frame.columns:
        pairs = frame.select("gold", "gold_label").unique()
    elif {"options", "option_indices"} <= set(frame.columns):
        pairs = frame.select(
            pl.col("option_indices").explode().alias("gold"), pl.col("options").explode().alias("gold_label")
        ).unique()
    else:
        return {}
    return {int(gold): str(label) for gold, label in pairs.iter_rows()}


def class_labels(frame: pl.DataFrame) -> tuple[str, ...]:
    """The class names a per-sample frame names (its ``gold_label`` column, else its MCQ options), by class
    index; a class it never names is shown by its index."""
    names = _class_labels(frame)
    return tuple(names.get(i, str(i)) for i in range(max(names, default=-1) + 1))


def _paired_samples(baseline: ComparedRun, other: ComparedRun) -> pl.DataFrame:
    """The samples both runs scored, by key: ``key``, ``gold`` and each run's other columns suffixed ``_a``
    (``baseline``) and ``_b`` (``other``).

    Raises:
        ComparisonError: the runs share no sample, or give a shared sample different gold classes.
    """
    a = baseline.samples.select("key", "gold", pl.exclude("key", "gold").name.suffix("_a"))
    b = other.samples.select("key", pl.col("gold").alias("gold_b"), pl.exclude("key", "gold").name.suffix("_b"))
    joined = a.join(b, on="key", how="inner").sort("key")
    if joined.is_empty():
        raise ComparisonError(
            f"{other.name} and {baseline.name} share no sample key: they cannot be compared sample by sample; "
            "evaluate both on the same samples (the same --limit, or none)"
        )
    wrong_gold = joined.filter(pl.col("gold") != pl.col("gold_b"))
    if not wrong_gold.is_empty():
        raise ComparisonError(
            f"{other.name} and {baseline.name} give sample {wrong_gold['key'][0]!r} different gold classes "
            f"({wrong_gold['gold_b'][0]} and {wrong_gold['gold'][0]}): they did not score the same data"
        )
    return joined


def _metric_differences(joined: pl.DataFrame, *, seed: int, n_resamples: int, confidence: float) -> pl.DataFrame:
    """Per metric of the paired samples ``joined``: both runs' values, the difference and its resampled interval."""
    metrics = _paired_metrics(joined)
    differences: dict[str, list[npt.NDArray[np.float64]]] = {name: [] for name in metrics}
    for chunk in resample_chunks(joined.height, seed, n_resamples):
        for name, (_, _, resampled) in metrics.items():
            differences[name].append(resampled(chunk))
    tail = (1 - confidence) / 2
    rows = []
    for name, (value_a, value_b, _) in metrics.items():
        low, high = np.quantile(np.concatenate(differences[name]), [tail, 1 - tail])
        rows.append((name, value_a, value_b, value_b - value_a, float(low), float(high)))
    return pl.DataFrame(
        rows,
        schema={
            "metric": pl.String,
            "baseline": pl.Float64,
            "other": pl.Float64,
            "difference": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
        },
        orient="row",
    )


def compare(
    baseline: ComparedRun,
    other: ComparedRun,
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Comparison:
    """``other`` against ``baseline`` over the sample keys both scored.

    The interval of each metric's difference is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of the difference over ``n_resamples`` paired resamples drawn with
    ``numpy.random.default_rng(seed)`` (the same draw for every metric).

    Raises:
        ComparisonError: the runs are of different benchmarks or benchmark versions (spec hash), share no
            sample, or give a shared sample different gold classes.
        ValueError: ``n_resamples`` below 2 or ``confidence`` outside (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    _check_comparable(baseline, other)
    joined = _paired_samples(baseline, other)
    metric_frame = _metric_differences(joined, seed=seed, n_resamples=n_resamples, confidence=confidence)
    correct_a, correct_b = joined["correct_a"], joined["correct_b"]
    baseline_only = int((correct_a & ~correct_b).sum())
    other_only = int((~correct_a & correct_b).sum())
    return Comparison(
        baseline=baseline.name,
        other=other.name,
        n_shared=joined.height,
        n_baseline_only=baseline.samples.height - joined.height,
        n_other_only=other.samples.height - joined.height,
        metrics=metric_frame,
        mcnemar=McNemarTest(baseline_only, other_only, mcnemar_exact(baseline_only, other_only)),
        classes=_class_differences(joined, {**_class_labels(other.samples), **_class_labels(baseline.samples)}),
        seed=seed,
        n_resamples=n_resamples,
        confidence=confidence,
    )


def _class_differences(joined: pl.DataFrame, labels: Mapping[int, str]) -> pl.DataFrame:
    return (
        joined.group_by("gold")
        .agg(
            pl.len().alias("n"),
            pl.col("correct_a").cast(pl.Float64).mean().alias("baseline"),
            pl.col("correct_b").cast(pl.Float64).mean().alias("other"),
        )
        .with_columns(
            pl.col("gold").replace_strict(labels, default=pl.col("gold").cast(pl.String)).alias("label"),
            (pl.col("other") - pl.col("baseline")).alias("difference"),
        )
        .sort([pl.col("difference").abs(), "gold"], descending=[True, False])
        .head(N_CLASSES)
        .select("gold", "label", "n", "baseline", "other", "difference")
    )


def _check_comparable(baseline: ComparedRun, other: ComparedRun) -> None:
    if baseline.benchmark != other.benchmark:
        raise ComparisonError(
            f"{other.name} is a run of {other.benchmark} and {baseline.name} of {baseline.benchmark}: only runs "
            "of one benchmark (any of its variants) can be compared"
        )
    if baseline.spec_hash and other.spec_hash and baseline.spec_hash != other.spec_hash:
        raise ComparisonError(
            f"{other.name} and {baseline.name} ran different versions of benchmark {baseline.benchmark} (spec "
            f"hash {other.spec_hash[:12]} and {baseline.spec_hash[:12]}): their samples and classes need not mean "
            "the same; evaluate both with one version of the spec"
        )


def compare_runs(
    runs: Sequence[ComparedRun],
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[Comparison]:
    """Each run after the first compared with the first (see :func:`compare`).

    Raises:
        ComparisonError: fewer than two runs, or as :func:`compare`.
    """
    if len(runs) < 2:
        raise ComparisonError(f"a comparison needs two runs or more, got {len(runs)}")
    for other in runs[1:]:  # every refusal before any bootstrap
        _check_comparable(runs[0], other)
    return [compare(runs[0], other, seed=seed, n_resamples=n_resamples, confidence=confidence) for other in runs[1:]]


def compared_run(result: Any, name: str | None = None) -> ComparedRun:
    """A run from :func:`~mill.core.evaluate`'s result (an ``EvalResult`` holding one run, or one of its
    ``runs``), named ``name`` or after its model and variant.

    Raises:
        NotOneRunError: an ``EvalResult`` that holds several runs (pick one from ``.runs``).
    """
    record: RunRecord = result.record
    return ComparedRun(
        name=name or f"{record.subject.model} {record.subject.variant}",
        benchmark=record.subject.benchmark,
        variant=record.subject.variant,
        spec_hash=record.subject.spec_hash,
        samples=result.samples,
        run_id=record.provenance.run_id,
    )


def stored_runs(
    output_dir: str | Path, names: Sequence[str], *, benchmarks: Sequence[str] = (), include_all: bool = False
) -> list[ComparedRun]:
    """The stored runs ``names`` name, in that order: each name is a run id (aggregate.csv's ``run_id``) or a
    model as ``mill collect`` shows it, optionally with its run's settings in brackets
    (``mill-shapes/mill-shapes[precision=fp32]``, as the ``settings`` column holds them), narrowed to
    ``benchmarks`` (benchmark or variant names) when given. A model name matches full runs only unless
    ``include_all`` (as ``mill collect --all``).

    Raises:
        ComparisonError: a name matches no run, or several (naming each with its run id).
        ResultsError: aggregate.csv, a per-sample file or a manifest cannot be read.
    """
    output_dir = Path(output_dir)
    rows = read_aggregate(output_dir)
    if benchmarks:
        rows = rows.filter(pl.col("benchmark").is_in(list(benchmarks)) | pl.col("task").is_in(list(benchmarks)))
    # One row per stored file: the variant's row rather than the rollup row that shares its file.
    files = rows.sort(pl.col("task") == pl.col("benchmark"), maintain_order=True).unique(
        "output_file", keep="first", maintain_order=True
    )
    runs = []
    for name in names:
        matches = files.filter(pl.col("run_id") == name)
        if matches.is_empty():
            named = _NAMED_SETTINGS.fullmatch(name)
            if named is not None:
                matches = files.filter(
                    (pl.col("model") == named.group("model")) & (pl.col("settings") == named.group("settings"))
                )
            if named is None or matches.is_empty():
                matches = files.filter(pl.col("model") == name)
            if not include_all:
                matches = matches.filter(pl.col("limit").is_null())
        if matches.height != 1:
            raise ComparisonError(_naming_problem(name, matches, output_dir, include_all))
        runs.append(_read_stored(output_dir, matches.row(0, named=True)))
    return runs


def _naming_problem(name: str, matches: pl.DataFrame, output_dir: Path, include_all: bool) -> str:
    if matches.is_empty():
        hint = "" if include_all else " (a --limit run needs --all)"
        return (
            f"no stored run in {ResultsDir(output_dir).aggregate_file} is named {name!r}{hint}: name a model as the "
            "model column of `mill collect --all` shows it, or a run by its run_id"
        )
    listed = "; ".join(
        f"{row['model']}[{row['settings']}] on {row['task']} seed {row['seed']}"
        + (f" limit {row['limit']}" if row["limit"] is not None else "")
        + f" (run id {row['run_id']})"
        for row in matches.iter_rows(named=True)
    )
    return (
        f"{name!r} names {matches.height} runs: {listed}; name one by its run id or as MODEL[SETTINGS], or narrow "
        "with --benchmarks"
    )


def _read_stored(output_dir: Path, row: Mapping[str, Any]) -> ComparedRun:
    samples, record = ResultsDir(output_dir).read_stored_run(row)
    variant = record.subject.variant or str(row["task"])
    settings = "" if row["default_settings"] in (True, None) else f"[{row['settings']}]"
    return ComparedRun(
        name=f"{row['model']}{settings} {variant}",
        benchmark=str(row["benchmark"]),
        variant=variant,
        spec_hash=record.subject.spec_hash,
        samples=samples,
        run_id=str(row["run_id"]),
    )
