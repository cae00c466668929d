"""Task kinds: how a variant poses its samples to a model and how the answers are graded.

A kind is one module owning everything about it: its variant schema (the ``[variants.X]`` table of a
spec), the task it builds from a spec, the backend protocol a model must implement to serve it, the
raw per-sample columns committed while a run goes, the scorer and the per-sample output columns, and how
result tables mark its numbers. The engine asks the kind; nothing else in Mill tests which kind it has.

Kinds are found through the ``mill.task_kinds`` entry-point group, Mill's own included
(``zero_shot``, ``generative_mcq``), so a third party adds one from its own distribution.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol

import polars as pl
from attrs import frozen

from mill.core.errors import MillError
from mill.core.metrics import MetricValue
from mill.core.sample import SampleSource
from mill.core.spec import Spec

# A kind's variant schema is named with the kind protocol (kinds, the engine); it is defined with the Spec that
# holds variants.
from mill.core.spec import Variant as Variant

ENTRY_POINT_GROUP = "mill.task_kinds"

#: Columns every raw chunk and every per-sample file starts with. ``skipped`` (raw chunks only) holds
#: the reason a sample could not be read, and is null for an evaluated sample.
SAMPLE_COLUMNS: dict[str, Any] = {"key": pl.String, "shard": pl.String, "gold": pl.Int64}
SKIPPED_COLUMN: dict[str, Any] = {"skipped": pl.String}


class UnknownKindError(MillError):
    """A spec names a task kind that no installed distribution provides."""


@frozen
class TableMark:
    """How result tables mark a kind's numbers (a symbol after the value) and the legend explaining it."""

    symbol: str
    legend: str


@frozen
class Scored:
    """A run's per-sample output (one row per evaluated sample, sorted by key) and its metrics."""

    frame: pl.DataFrame
    metrics: Mapping[str, MetricValue]


@frozen
class Regraded:
    """A stored run graded again: its new per-sample output and metrics, and how many answers changed."""

    scored: Scored
    changed: int


class Rescorer(Protocol):
    """How a kind whose grading follows versioned rules (a parser) grades a stored run again, without the model."""

    @property
    def version(self) -> int:
        """The version of the rules; recorded with every result (``scorer_version``) and raised whenever the
        grade of some stored answer can change."""
        ...

    def rescore(self, variant: Any, frame: pl.DataFrame, seed: int) -> Regraded:
        """Grade ``frame``, a per-sample output of ``variant`` scored under ``seed``, with the current rules.

        Returns the same rows in the same order with the graded columns replaced, the metrics recomputed
        exactly as :meth:`TaskKind.score` computes them, and how many rows' graded answer changed.

        Raises:
            ResultsError: the frame lacks a column the rules read.
        """
        ...


class TaskKind(Protocol):
    """One kind of task. Implementations are frozen values registered under ``mill.task_kinds``."""

    @property
    def name(self) -> str:
        """The ``kind = ...`` value of a spec's variants, and the ``task_type`` column of results."""
        ...

    @property
    def variant_type(self) -> type[Variant]:
        """The attrs class a ``[variants.X]`` table of this kind is structured into."""
        ...

    @property
    def backend_protocol(self) -> type[Any]:
        """A runtime-checkable protocol that a loaded backend must satisfy to serve this kind."""
        ...

    @property
    def raw_schema(self) -> Mapping[str, Any]:
        """The columns a backend's answers are committed with, after :data:`SAMPLE_COLUMNS`."""
        ...

    @property
    def mark(self) -> TableMark | None:
        """How result tables mark this kind's numbers; None for none."""
        ...

    @property
    def rescorer(self) -> Rescorer | None:
        """How stored results are graded again when the kind's rules change (``mill rescore``); None for a kind
        whose grade is fixed by the model's answer (nothing to re-grade, no ``scorer_version``)."""
        ...

    def check_variant(self, variant: Any, n_classes: int) -> Sequence[tuple[str, str]]:
        """Problems of a structured variant beyond its types, as (key, message) pairs; empty when valid."""
        ...

    def settings(self, variant: Any) -> Mapping[str, str]:
        """Variant fields that change outputs and so belong to the run's settings (e.g. max_new_tokens)."""
        ...

    def build_task(self, spec: Spec, variant_name: str, variant: Any, seed: int) -> Any:
        """What the backend is asked to do for ``variant`` of ``spec`` under ``seed`` (pure)."""
        ...

    def answer(self, backend: Any, task: Any, data: SampleSource) -> Iterator[pl.DataFrame]:
        """Run ``task`` on ``data`` through ``backend``: one frame of raw columns (:data:`SAMPLE_COLUMNS`
        and :attr:`raw_schema`) per batch, as the backend produces them."""
        ...

    def score(self, task: Any, variant: Any, raw: pl.DataFrame, seed: int) -> Scored:
        """Grade the evaluated (not skipped) raw rows ``raw``, sorted by key; metrics named as ``variant``
        says and seeded by ``seed``."""
        ...

    def metrics(self, frame: pl.DataFrame, metric: str, seed: int) -> Mapping[str, MetricValue]:
        """The metrics of a per-sample output ``frame`` as :meth:`score` wrote it (``metric`` the variant's
        headline metric), equal to those :meth:`score` returned: ``mill verify`` recomputes them from the
        stored file alone, without the spec."""
        ...


def scorer_version(kind: TaskKind) -> int | None:
    """The version of the rules ``kind`` grades by, as results record it; None for a kind without such rules."""
    return None if kind.rescorer is None else kind.rescorer.version


def raw_schema(kind: TaskKind) -> dict[str, Any]:
    """Every column of a kind's committed chunks, in order."""
    return {**SAMPLE_COLUMNS, **kind.raw_schema, **SKIPPED_COLUMN}


@functools.cache
def installed_kinds() -> Mapping[str, TaskKind]:
    """Every task kind registered by an installed distribution, by name."""
    kinds: dict[str, TaskKind] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        kind: TaskKind = entry.load()
        if kind.name != entry.name:
            raise UnknownKindError(
                f"entry point {entry.name!r} of {entry.dist.name if entry.dist else '?'} registers a task kind "
                f"named {kind.name!r}; the two names must agree"
            )
        kinds[entry.name] = kind
    return kinds


def get_kind(name: str) -> TaskKind:
    """The installed task kind ``name``.

    Raises:
        UnknownKindError: listing the installed kinds.
    """
    kinds = installed_kinds()
    if name not in kinds:
        choices = ", ".join(repr(k) for k in kinds) or "none"
        raise UnknownKindError(f"expected one of {choices}, got {name!r}")
    return kinds[name]
