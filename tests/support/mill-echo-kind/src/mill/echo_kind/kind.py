"""The ``label_parity`` task kind: every part mill-core's :class:`~mill.core.task_kind.TaskKind` asks for.

A backend answers each sample's class index modulo the variant's ``modulus``; the scorer grades the
answers against the gold labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import polars as pl
from attrs import frozen

from mill.core.backend import Backend
from mill.core.metrics import MetricValue, accuracy_with_stderr
from mill.core.sample import SampleSource
from mill.core.spec import Spec
from mill.core.task_kind import SAMPLE_COLUMNS, Rescorer, Scored, TableMark

NAME = "label_parity"


@frozen
class ParityVariant:
    """``[variants.X]`` with ``kind = "label_parity"``: ``modulus`` 2 asks for the parity."""

    kind: str
    metric: str
    modulus: int = 2


@frozen
class ParityTask:
    """Answer each sample's class index modulo ``modulus``."""

    benchmark: str
    variant: str
    modulus: int


@frozen
class ParityBatchResult:
    """One answer per sample, aligned with ``keys``."""

    keys: Sequence[str]
    shards: Sequence[str]
    golds: Sequence[int]
    answers: Sequence[int]

    def frame(self) -> pl.DataFrame:
        columns = {"key": self.keys, "shard": self.shards, "gold": self.golds, "answer": self.answers}
        return pl.DataFrame(columns, schema={**SAMPLE_COLUMNS, **RAW_SCHEMA})


@runtime_checkable
class ParityBackend(Backend, Protocol):
    """A loaded model that answers label-parity tasks."""

    def run_parity(self, task: ParityTask, data: SampleSource) -> Iterator[ParityBatchResult]: ...


RAW_SCHEMA: dict[str, Any] = {"answer": pl.Int64}
OUTPUT_SCHEMA: dict[str, Any] = {**SAMPLE_COLUMNS, "residue": pl.Int64, "answer": pl.Int64, "correct": pl.Boolean}

MARK = TableMark("‡", "label-parity variant (a test-only task kind from mill-echo-kind)")


def score(task: ParityTask, metric: str, raw: pl.DataFrame, seed: int) -> Scored:
    """Each sample's true residue and whether the answer matched it; ``metric`` is the accuracy."""
    frame = raw.select(
        "key",
        "shard",
        "gold",
        residue=pl.col("gold") % task.modulus,
        answer=pl.col("answer"),
        correct=pl.col("answer") == pl.col("gold") % task.modulus,
    ).cast(pl.Schema(OUTPUT_SCHEMA))
    return Scored(frame, metrics(frame, metric, seed))


def metrics(frame: pl.DataFrame, metric: str, seed: int) -> dict[str, MetricValue]:
    """``metric``: the share of answers that matched their residue."""
    return {metric: accuracy_with_stderr(frame["correct"].to_numpy(), seed)}


@frozen
class LabelParityKind:
    """The ``label_parity`` task kind."""

    name: str = NAME
    variant_type: type[ParityVariant] = ParityVariant
    backend_protocol: type[Any] = ParityBackend
    raw_schema: Mapping[str, Any] = RAW_SCHEMA
    mark: TableMark | None = MARK
    rescorer: Rescorer | None = None  # the answer is the grade: nothing to re-grade

    def check_variant(self, variant: ParityVariant, n_classes: int) -> Sequence[tuple[str, str]]:
        if not 2 <= variant.modulus <= n_classes:
            return [("modulus", f"expected 2 to {n_classes} (the number of classes), got {variant.modulus}")]
        return []

    def settings(self, variant: ParityVariant) -> Mapping[str, str]:
        return {"modulus": str(variant.modulus)}

    def build_task(self, spec: Spec, variant_name: str, variant: ParityVariant, seed: int) -> ParityTask:
        del seed
        return ParityTask(spec.name, variant_name, variant.modulus)

    def answer(self, backend: ParityBackend, task: ParityTask, data: SampleSource) -> Iterator[pl.DataFrame]:
        for batch in backend.run_parity(task, data):
            yield batch.frame()

    def score(self, task: ParityTask, variant: ParityVariant, raw: pl.DataFrame, seed: int) -> Scored:
        return score(task, variant.metric, raw, seed)

    def metrics(self, frame: pl.DataFrame, metric: str, seed: int) -> Mapping[str, MetricValue]:
        return metrics(frame, metric, seed)


kind = LabelParityKind()
