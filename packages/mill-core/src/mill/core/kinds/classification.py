"""Closed-set classification: a supervised classifier's own head scores every image (timm, torchvision, a
transformers image classifier).

The model outputs one logit per class of the list it was trained on (ImageNet-1k's 1000). A benchmark whose
classes are a subset of that list (ImageNet-A, -R, -O) keeps only the subset's logits before ranking, as timm's
published A/R results do; one whose classes gather several of them (ObjectNet) scores each class by the maximum
of its classes' logits, as Taori et al.'s ``project_logits`` does. The backend answers with its top-k classes of
the benchmark per sample, best first, in the same columns as zero-shot; the scorer derives top-1 and ``acc{k}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import polars as pl
from attrs import frozen

from mill.core.backend import Backend
from mill.core.kinds.zero_shot import RAW_SCHEMA, ZeroShotBatchResult, check_top_k, predictions_frame, topk_metrics
from mill.core.metrics import MetricValue
from mill.core.sample import SampleSource
from mill.core.spec import Spec
from mill.core.task_kind import Rescorer, Scored, TableMark

NAME = "classification"

#: A batch's answer: top-k class indices of the benchmark per sample, the same columns as zero-shot's.
ClassificationBatchResult = ZeroShotBatchResult


@frozen
class ClassificationVariant:
    """``[variants.X]`` with ``kind = "classification"``: ``metric`` names top-1; ``top_k`` the classes kept."""

    kind: str
    metric: str
    top_k: int = 5


@frozen
class ClassificationTask:
    """Rank the benchmark's classes by a classifier's ``n_outputs`` logits.

    ``parent_classes`` gives, per benchmark class in label order, the output indices that score it (None: output
    ``i`` is class ``i`` and ``n_outputs`` equals the number of classes).
    """

    benchmark: str
    variant: str
    classnames: tuple[str, ...]
    n_outputs: int
    parent_classes: tuple[tuple[int, ...], ...] | None = None
    top_k: int = 5


@runtime_checkable
class ClassificationBackend(Backend, Protocol):
    """A loaded classifier that serves closed-set classification tasks."""

    def run_classification(
        self, task: ClassificationTask, data: SampleSource
    ) -> Iterator[ClassificationBatchResult]: ...


def score(task: ClassificationTask, raw: pl.DataFrame, metric: str, seed: int) -> Scored:
    """Per-sample predictions and their :func:`metrics`. ``raw`` is sorted by key."""
    frame = predictions_frame(task.classnames, task.top_k, raw)
    return Scored(frame, metrics(frame, metric, seed))


def metrics(frame: pl.DataFrame, metric: str, seed: int) -> dict[str, MetricValue]:
    """``metric`` (top-1) and ``acc{k}`` (k > 1), each with a bootstrap stderr seeded by ``seed``."""
    return topk_metrics(frame, metric, seed)


@frozen
class ClassificationKind:
    """The ``classification`` task kind."""

    name: str = NAME
    variant_type: type[ClassificationVariant] = ClassificationVariant
    backend_protocol: type[Any] = ClassificationBackend
    raw_schema: Mapping[str, Any] = RAW_SCHEMA
    mark: TableMark | None = None
    # The top-k classes are the model's answer itself: nothing is parsed, so nothing can be re-graded.
    rescorer: Rescorer | None = None

    def check_variant(self, variant: ClassificationVariant, n_classes: int) -> Sequence[tuple[str, str]]:
        del n_classes  # a top_k above the class count keeps every class (see build_task)
        return check_top_k(variant.top_k)

    def settings(self, variant: ClassificationVariant) -> Mapping[str, str]:
        del variant
        return {}

    def build_task(
        self, spec: Spec, variant_name: str, variant: ClassificationVariant, seed: int
    ) -> ClassificationTask:
        del seed
        top_k = min(variant.top_k, len(spec.classnames))
        return ClassificationTask(spec.name, variant_name, spec.classnames, spec.n_outputs, spec.parent_classes, top_k)

    def answer(
        self, backend: ClassificationBackend, task: ClassificationTask, data: SampleSource
    ) -> Iterator[pl.DataFrame]:
        for batch in backend.run_classification(task, data):
            yield batch.frame()

    def score(self, task: ClassificationTask, variant: ClassificationVariant, raw: pl.DataFrame, seed: int) -> Scored:
        return score(task, raw, variant.metric, seed)

    def metrics(self, frame: pl.DataFrame, metric: str, seed: int) -> Mapping[str, MetricValue]:
        return metrics(frame, metric, seed)


kind = ClassificationKind()
