"""Zero-shot classification: every image scored against all class names by a prompt-ensemble classifier.

The backend answers with its top-k classes per sample (best first); the scorer derives top-1, the
top-k accuracy ``acc{k}`` (for k > 1) and the mean per-class recall.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl
from attrs import frozen

from mill.core.backend import Backend
from mill.core.metrics import (
    MetricValue,
    accuracy_with_stderr,
    mean_per_class_recall_with_stderr,
    topk_accuracy_with_stderr,
)
from mill.core.sample import SampleSource
from mill.core.spec import Spec
from mill.core.task_kind import SAMPLE_COLUMNS, Rescorer, Scored, TableMark

NAME = "zero_shot"


@frozen
class ZeroShotVariant:
    """``[variants.X]`` with ``kind = "zero_shot"``: ``metric`` names top-1 (unless it is
    ``mean_per_class_recall``, which makes that the headline); ``top_k`` the classes kept per sample."""

    kind: str
    metric: str
    top_k: int = 5


@frozen
class ZeroShotTask:
    """Score every image against ``classnames`` with a prompt-ensemble classifier.

    ``templates`` hold a ``{c}`` placeholder for the class name.
    """

    benchmark: str
    variant: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    top_k: int = 5


@frozen
class ZeroShotBatchResult:
    """Top-k class indices per sample, best first, aligned with ``keys``: columns, one entry per sample."""

    keys: Sequence[str]
    shards: Sequence[str]
    golds: Sequence[int]
    topk: Sequence[Sequence[int]]

    def frame(self) -> pl.DataFrame:
        """The batch as raw chunk columns."""
        columns = {"key": self.keys, "shard": self.shards, "gold": self.golds, "topk": self.topk}
        return pl.DataFrame(columns, schema={**SAMPLE_COLUMNS, **RAW_SCHEMA})


@runtime_checkable
class ZeroShotBackend(Backend, Protocol):
    """A loaded model that serves zero-shot tasks."""

    def run_zero_shot(self, task: ZeroShotTask, data: SampleSource) -> Iterator[ZeroShotBatchResult]: ...


RAW_SCHEMA: dict[str, Any] = {"topk": pl.List(pl.Int64)}


def output_schema(top_k: int) -> dict[str, Any]:
    """The per-sample file's columns for a variant keeping ``top_k`` classes."""
    return {
        **SAMPLE_COLUMNS,
        "gold_label": pl.String,
        "prediction": pl.Int64,
        "prediction_label": pl.String,
        f"top{top_k}": pl.List(pl.Int64),
        "correct": pl.Boolean,
    }


def score(task: ZeroShotTask, raw: pl.DataFrame, metric: str, seed: int) -> Scored:
    """Per-sample predictions and their :func:`metrics`. ``raw`` is sorted by key."""
    frame = predictions_frame(task.classnames, task.top_k, raw)
    return Scored(frame, metrics(frame, metric, seed))


def predictions_frame(classnames: Sequence[str], k: int, raw: pl.DataFrame) -> pl.DataFrame:
    """The per-sample file (:func:`output_schema`) of raw top-k rows (sorted by key) over ``classnames``."""
    labels = np.array(classnames, dtype=object)
    golds = raw["gold"].to_numpy()
    predictions = raw["topk"].list.first().to_numpy()
    frame = pl.DataFrame(
        {
            "key": raw["key"],
            "shard": raw["shard"],
            "gold": raw["gold"],
            "gold_label": labels[golds].tolist(),
            "prediction": predictions,
            "prediction_label": labels[predictions].tolist(),
            f"top{k}": raw["topk"].list.head(k),
            "correct": predictions == golds,
        },
        schema=output_schema(k),
    )
    return frame


_TOPK_COLUMN = re.compile(r"top(\d+)")


#: A variant ``metric`` of this name makes the mean per-class recall its headline (DataComp's main metric
#: for Caltech-101, Flowers, Pets and FGVC Aircraft); top-1 is then reported as ``acc``.
MEAN_PER_CLASS_RECALL = "mean_per_class_recall"


def topk_metrics(frame: pl.DataFrame, metric: str, seed: int) -> dict[str, MetricValue]:
    """``metric`` (top-1) and ``acc{k}`` (k > 1) of a per-sample frame (:func:`output_schema`), each with a
    bootstrap stderr seeded by ``seed``."""
    (column,) = [name for name in frame.columns if _TOPK_COLUMN.fullmatch(name)]
    k = int(column[3:])
    golds = frame["gold"].to_numpy()
    topk = np.asarray(frame[column].to_list(), dtype=np.int64).reshape(len(frame), -1)
    values = {metric: accuracy_with_stderr(frame["correct"].to_numpy(), seed)}
    if k > 1:
        values[f"acc{k}"] = topk_accuracy_with_stderr(golds, topk, min(k, topk.shape[1]), seed)
    return values


def metrics(frame: pl.DataFrame, metric: str, seed: int) -> dict[str, MetricValue]:
    """:func:`topk_metrics` and ``mean_per_class_recall`` of a per-sample frame (:func:`output_schema`), each with
    a bootstrap stderr seeded by ``seed``; with ``metric`` = :data:`MEAN_PER_CLASS_RECALL`, that recall first and
    top-1 as ``acc``."""
    golds = frame["gold"].to_numpy()
    recall = mean_per_class_recall_with_stderr(golds, frame["prediction"].to_numpy(), seed)
    if metric == MEAN_PER_CLASS_RECALL:
        return {metric: recall, **topk_metrics(frame, "acc", seed)}
    return {**topk_metrics(frame, metric, seed), MEAN_PER_CLASS_RECALL: recall}


def check_top_k(top_k: int) -> list[tuple[str, str]]:
    """The problem of a variant's ``top_k``, as a (key, message) pair; empty when valid."""
    if top_k < 1:
        return [("top_k", f"expected a positive number of classes kept per sample, got {top_k}")]
    return []


@frozen
class ZeroShotKind:
    """The ``zero_shot`` task kind."""

    name: str = NAME
    variant_type: type[ZeroShotVariant] = ZeroShotVariant
    backend_protocol: type[Any] = ZeroShotBackend
    raw_schema: Mapping[str, Any] = RAW_SCHEMA
    mark: TableMark | None = None
    # The top-k classes are the model's answer itself: nothing is parsed, so nothing can be re-graded.
    rescorer: Rescorer | None = None

    def check_variant(self, variant: ZeroShotVariant, n_classes: int) -> Sequence[tuple[str, str]]:
        # A top_k above the class count keeps every class (see build_task).
        problems = list(check_top_k(variant.top_k))
        if n_classes == 0:
            problems.insert(0, ("kind", "zero_shot classifies into the spec's classes, and this spec has none"))
        return problems

    def settings(self, variant: ZeroShotVariant) -> Mapping[str, str]:
        del variant
        return {}

    def build_task(self, spec: Spec, variant_name: str, variant: ZeroShotVariant, seed: int) -> ZeroShotTask:
        del seed
        top_k = min(variant.top_k, len(spec.classnames))  # names the metric: acc3 for 3 classes, not acc5
        return ZeroShotTask(spec.name, variant_name, spec.classnames, spec.templates, top_k)

    def answer(self, backend: ZeroShotBackend, task: ZeroShotTask, data: SampleSource) -> Iterator[pl.DataFrame]:
        for batch in backend.run_zero_shot(task, data):
            yield batch.frame()

    def score(self, task: ZeroShotTask, variant: ZeroShotVariant, raw: pl.DataFrame, seed: int) -> Scored:
        return score(task, raw, variant.metric, seed)

    def metrics(self, frame: pl.DataFrame, metric: str, seed: int) -> Mapping[str, MetricValue]:
        return metrics(frame, metric, seed)


kind = ZeroShotKind()
