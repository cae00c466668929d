"""Zero-shot classification: every image scored against all class names by a prompt-ensemble classifier.

The backend answers with its top-k classes per sample (best first); the scorer derives top-1, the
top-k accuracy ``acc{k}`` (for k > 1) and the mean per-class recall; for a dataset whose samples carry metadata
(``dataset.metadata_member``), the per-sample file holds its fields, and with ``dataset.group_by`` the worst
group's accuracy (``worst_group_acc``, ``worst_group_acc{k}``); a variant whose metric is ``macro_f1`` adds the
macro F1 score. These are the metrics DataComp reports for its WILDS and geographic datasets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl
from attrs import frozen

from mill.core.backend import Backend
from mill.core.errors import DataError, SpecError
from mill.core.metrics import (
    MetricValue,
    accuracy_with_stderr,
    macro_f1_with_stderr,
    mean_per_class_recall_with_stderr,
    topk_accuracy_with_stderr,
    worst_group_accuracy_with_stderr,
)
from mill.core.sample import MetadataReader, SampleSource
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

    ``templates`` hold a ``{c}`` placeholder for the class name. ``metadata_fields`` name the entries of each
    sample's metadata row (none for a dataset without one); ``group_by``, one of them, groups the samples.
    """

    benchmark: str
    variant: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    top_k: int = 5
    metadata_fields: tuple[str, ...] = ()
    group_by: str | None = None


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
#: The zero-shot kind's committed chunks also hold each sample's metadata row (null for a dataset without one).
METADATA_SCHEMA: dict[str, Any] = {"metadata": pl.List(pl.Int64)}
#: The per-sample column holding the group a sample is scored in for the worst-group metrics.
GROUP_COLUMN = "group"


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
    """Per-sample predictions, with the samples' metadata fields (and their :data:`GROUP_COLUMN`) when the task
    has them, and their :func:`metrics`. ``raw`` is sorted by key."""
    frame = predictions_frame(task.classnames, task.top_k, raw)
    if task.metadata_fields:
        rows = raw["metadata"].to_list()
        fields = {
            name: pl.Series(name, [row[index] for row in rows], dtype=pl.Int64)
            for index, name in enumerate(task.metadata_fields)
        }
        frame = frame.with_columns(fields.values())
        if task.group_by is not None:
            frame = frame.with_columns(fields[task.group_by].alias(GROUP_COLUMN))
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
#: A variant ``metric`` of this name makes the macro F1 score its headline (DataComp's for iWildCam).
MACRO_F1 = "macro_f1"
#: Variant metrics naming the worst group's top-1 or top-k accuracy (DataComp's for FMoW, GeoDE, Dollar Street):
#: they need ``dataset.group_by``.
WORST_GROUP = re.compile(r"worst_group_acc(\d*)")


def _top1_name(metric: str) -> str:
    """What top-1 is reported as: the variant's metric, unless that names another metric."""
    special = metric in (MEAN_PER_CLASS_RECALL, MACRO_F1) or WORST_GROUP.fullmatch(metric)
    return "acc" if special else metric


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
    a bootstrap stderr seeded by ``seed``; with a :data:`GROUP_COLUMN`, the worst group's top-1 and top-k
    accuracy; with ``metric`` = :data:`MACRO_F1`, the macro F1. The variant's ``metric`` comes first; top-1 is
    ``acc`` when ``metric`` names another of these."""
    golds = frame["gold"].to_numpy()
    predictions = frame["prediction"].to_numpy()
    values = {
        **topk_metrics(frame, _top1_name(metric), seed),
        MEAN_PER_CLASS_RECALL: mean_per_class_recall_with_stderr(golds, predictions, seed),
    }
    if GROUP_COLUMN in frame.columns:
        values.update(worst_group_metrics(frame, seed))
    if metric == MACRO_F1:
        values[MACRO_F1] = macro_f1_with_stderr(golds, predictions, seed)
    return {metric: values.pop(metric), **values} if metric in values else values


def worst_group_metrics(frame: pl.DataFrame, seed: int) -> dict[str, MetricValue]:
    """The lowest top-1 (and top-k, k > 1) accuracy of any group of :data:`GROUP_COLUMN` in a per-sample frame."""
    (column,) = [name for name in frame.columns if _TOPK_COLUMN.fullmatch(name)]
    k = int(column[3:])
    groups = frame[GROUP_COLUMN].to_numpy()
    values = {"worst_group_acc": worst_group_accuracy_with_stderr(frame["correct"].to_numpy(), groups, seed)}
    if k > 1:
        topk = np.asarray(frame[column].to_list(), dtype=np.int64).reshape(len(frame), -1)
        hits = (topk[:, :k] == frame["gold"].to_numpy()[:, None]).any(axis=1)
        values[f"worst_group_acc{k}"] = worst_group_accuracy_with_stderr(hits, groups, seed)
    return values


def with_metadata(task: ZeroShotTask, frame: pl.DataFrame, data: SampleSource) -> pl.DataFrame:
    """A batch's raw ``frame`` with each sample's metadata row from ``data`` (null when the task has no fields).

    Raises:
        DataError: the task has metadata fields and ``data`` holds no metadata rows.
    """
    if not task.metadata_fields:
        return frame.with_columns(pl.lit(None, dtype=METADATA_SCHEMA["metadata"]).alias("metadata"))
    if not isinstance(data, MetadataReader):
        raise DataError(f"{task.benchmark}: its samples' metadata rows were not read; open its data with mill-data")
    rows = data.metadata(frame["key"].to_list())
    return frame.with_columns(pl.Series("metadata", rows, dtype=METADATA_SCHEMA["metadata"]))


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
    raw_schema: Mapping[str, Any] = {**RAW_SCHEMA, **METADATA_SCHEMA}
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
        """Raises SpecError for a worst-group metric on a dataset without ``group_by``."""
        del seed
        top_k = min(variant.top_k, len(spec.classnames))  # names the metric: acc3 for 3 classes, not acc5
        worst = WORST_GROUP.fullmatch(variant.metric)
        if worst and (spec.dataset.group_by is None or int(worst.group(1) or 1) not in (1, top_k)):
            raise SpecError(
                f"{spec.path}: variants.{variant_name}.metric: {variant.metric} needs dataset.group_by (a metadata "
                f"field) and names top-1 (worst_group_acc) or the variant's top_k (worst_group_acc{top_k})"
            )
        dataset = spec.dataset
        return ZeroShotTask(
            spec.name, variant_name, spec.classnames, spec.templates, top_k, dataset.metadata_fields, dataset.group_by
        )

    def answer(self, backend: ZeroShotBackend, task: ZeroShotTask, data: SampleSource) -> Iterator[pl.DataFrame]:
        for batch in backend.run_zero_shot(task, data):
            yield with_metadata(task, batch.frame(), data)

    def score(self, task: ZeroShotTask, variant: ZeroShotVariant, raw: pl.DataFrame, seed: int) -> Scored:
        return score(task, raw, variant.metric, seed)

    def metrics(self, frame: pl.DataFrame, metric: str, seed: int) -> Mapping[str, MetricValue]:
        return metrics(frame, metric, seed)


kind = ZeroShotKind()
