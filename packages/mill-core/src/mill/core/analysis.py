"""Where a model fails: statistics over a run's per-sample frame (see docs/outputs.md), as pure functions
of polars frames, for ``mill report`` and for anyone reading the parquet files.

Every accuracy comes with its standard error. For a whole run that is the run's bootstrap standard error
(in the manifest); for a slice of samples (one class, one gold position) it is the binomial standard error
``sqrt(p (1 - p) / n)``, which is what a bootstrap over that slice converges to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from mill.core.mcq import option_letters

#: The "letter" under which replies naming no option are counted in :func:`chosen_letters`.
UNPARSED = "unparsed"


def _accuracy(correct: pl.Expr) -> list[pl.Expr]:
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
        .agg(_accuracy(pl.col("correct")))
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


def mcq_summary(frame: pl.DataFrame) -> pl.DataFrame:
    """One row: ``n``, ``accuracy``, ``stderr`` (binomial), ``n_unparsed``, ``unparsed_rate`` of an MCQ frame."""
    unparsed = pl.col("parsed_letter").is_null()
    return frame.select(
        pl.len().alias("n"),
        pl.col("correct").cast(pl.Float64).mean().alias("accuracy"),
        (pl.col("correct").cast(pl.Float64).mean() * (1 - pl.col("correct").cast(pl.Float64).mean()) / pl.len())
        .sqrt()
        .alias("stderr"),
        unparsed.sum().alias("n_unparsed"),
        unparsed.cast(pl.Float64).mean().alias("unparsed_rate"),
    )


def unparsed_responses(frame: pl.DataFrame, n: int = 10) -> pl.DataFrame:
    """Up to ``n`` replies that named no option, in key order: ``key``, ``gold_letter``, ``response``."""
    return frame.filter(pl.col("parsed_letter").is_null()).sort("key").head(n).select("key", "gold_letter", "response")


def accuracy_by_gold_position(frame: pl.DataFrame) -> pl.DataFrame:
    """Accuracy by the gold option's letter, in letter order: ``gold_letter``, ``n``, ``n_correct``,
    ``accuracy``, ``stderr``. A model with a position bias scores unevenly here."""
    return frame.group_by("gold_letter").agg(_accuracy(pl.col("correct"))).sort("gold_letter")


def chosen_letters(frame: pl.DataFrame) -> pl.DataFrame:
    """How often each letter was chosen (the parsed letter; :data:`UNPARSED` for replies naming none), beside
    how often it was the gold one: ``letter``, ``chosen``, ``gold``, ``chosen_share``, ``gold_share``.
    Every letter of the widest question appears, in order, then :data:`UNPARSED`."""
    width = int(frame.select(pl.col("options").list.len().max()).item() or 0)
    order = [*option_letters(width), UNPARSED]
    chosen = frame.group_by(pl.col("parsed_letter").fill_null(UNPARSED).alias("letter")).agg(pl.len().alias("chosen"))
    gold = frame.group_by(pl.col("gold_letter").alias("letter")).agg(pl.len().alias("gold"))
    return (
        pl.DataFrame({"letter": order, "position": range(len(order))})
        .join(chosen, on="letter", how="left")
        .join(gold, on="letter", how="left")
        .with_columns(pl.col("chosen", "gold").fill_null(0).cast(pl.Int64))
        .with_columns(
            (pl.col("chosen") / frame.height).alias("chosen_share"),
            (pl.col("gold") / frame.height).alias("gold_share"),
        )
        .sort("position")
        .drop("position")
    )


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
