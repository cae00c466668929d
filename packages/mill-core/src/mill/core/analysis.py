"""Where a model fails: statistics over a classification or zero-shot run's per-sample frame (see docs/outputs.md),
as pure functions of polars frames, for ``mill report`` and for anyone reading the parquet files. (A generative
multiple-choice run's are its kind's: :mod:`mill.core.kinds.generative_mcq`.)

Every accuracy comes with its standard error. For a whole run that is the run's bootstrap standard error
(in the manifest); for a slice of samples (one class, one gold position) it is the binomial standard error
``sqrt(p (1 - p) / n)``, which is what a bootstrap over that slice converges to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl


def binomial_accuracy(correct: pl.Expr) -> list[pl.Expr]:
    """Aggregations of a boolean ``correct`` column: ``n``, ``n_correct``, ``accuracy`` and its binomial ``stderr``."""
    n = pl.len().alias("n")
    accuracy = correct.cast(pl.Float64).mean()
    stderr = (accuracy * (1 - accuracy) / pl.len()).sqrt()
    return [n, correct.sum().alias("n_correct"), accuracy.alias("accuracy"), stderr.alias("stderr")]


def per_class_accuracy(frame: pl.DataFrame, classnames: Sequence[str]) -> pl.DataFrame:
    """Accuracy of each gold class present in ``frame`` (columns ``gold``, ``correct``), worst first
    (ties by class index): ``gold``, ``label``, ``n``, ``n_correct``, ``accuracy``, ``stderr``."""
    names = pl.DataFrame(
        {"gold": range(len(classnames)), "label": list(classnames)}, schema_overrides={"gold": pl.Int64}
    )
    return (
        frame.group_by("gold")
        .agg(binomial_accuracy(pl.col("correct")))
        .join(names, on="gold", how="left")
        .with_columns(pl.col("label").fill_null(pl.col("gold").cast(pl.String)))
        .select("gold", "label", "n", "n_correct", "accuracy", "stderr")
        .sort("accuracy", "gold")
    )


def confused_pairs(frame: pl.DataFrame, n: int = 10) -> pl.DataFrame:
    """The ``n`` most frequent (gold → predicted) mistakes of a zero-shot frame: ``gold_label``,
    ``prediction_label``, ``count``, ``share_of_gold`` (of that gold class's samples); most frequent first."""
    totals = frame.group_by("gold_label").agg(pl.len().alias("n_gold"))
    return (
        frame.filter(~pl.col("correct"))
        .group_by("gold_label", "prediction_label")
        .agg(pl.len().alias("count"))
        .join(totals, on="gold_label")
        .with_columns((pl.col("count") / pl.col("n_gold")).alias("share_of_gold"))
        .sort(["count", "gold_label", "prediction_label"], descending=[True, False, False])
        .head(n)
        .select("gold_label", "prediction_label", "count", "share_of_gold")
    )


def misclassified(frame: pl.DataFrame, n: int = 24) -> pl.DataFrame:
    """Up to ``n`` misclassified samples, spread evenly over the run's wrong answers in key order (so the
    pick is deterministic and covers all shards): every column of ``frame``."""
    wrong = frame.filter(~pl.col("correct")).sort("key")
    if wrong.height <= n:
        return wrong
    step = wrong.height / n
    return wrong[[int(i * step) for i in range(n)]]


def top_labels(top: pl.Expr, classnames: Sequence[str]) -> pl.Expr:
    """The class names of a list column of class indices (a ``top5`` column)."""
    return top.list.eval(pl.element().replace_strict(range(len(classnames)), list(classnames), default="?"))


def against_baseline(per_class: Mapping[str, pl.DataFrame], baseline: str) -> pl.DataFrame:
    """Each model's per-class accuracy beside the baseline model's (frames from :func:`per_class_accuracy`,
    keyed by model): ``model``, ``gold``, ``label``, ``accuracy``, ``baseline_accuracy``, ``delta``, for the
    classes both saw, largest losses first. The baseline itself is left out.

    Raises:
        KeyError: ``baseline`` is not one of the models.
    """
    reference = per_class[baseline].select("gold", pl.col("accuracy").alias("baseline_accuracy"))
    frames = [
        frame.select("gold", "label", "accuracy").with_columns(pl.lit(model).alias("model"))
        for model, frame in per_class.items()
        if model != baseline
    ]
    schema = {"model": pl.String, "gold": pl.Int64, "label": pl.String, "accuracy": pl.Float64}
    joined = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return (
        joined.join(reference, on="gold")
        .with_columns((pl.col("accuracy") - pl.col("baseline_accuracy")).alias("delta"))
        .select("model", "gold", "label", "accuracy", "baseline_accuracy", "delta")
        .sort(["model", "delta", "gold"])
    )
