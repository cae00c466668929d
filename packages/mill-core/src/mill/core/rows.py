"""The rows of ``aggregate.csv``: one per model × task × metric × run settings, and how a run's metrics become them.

Pure: no file is read or written here (the results directory, :mod:`mill.core.results`, stores them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
from attrs import asdict, frozen

from mill.core.metrics import MetricValue

# Column order is part of the interface: these come first, in this order.
AGGREGATE_SCHEMA: dict[str, Any] = {
    "model": pl.String,
    "benchmark": pl.String,
    "task": pl.String,
    "task_type": pl.String,
    "n_shot": pl.Int64,
    "metric": pl.String,
    "performance": pl.Float64,
    "stderr": pl.Float64,
    "n_samples": pl.Int64,
    "seed": pl.Int64,
    "limit": pl.Int64,
    "settings": pl.String,
    "run_id": pl.String,
    "default_settings": pl.Boolean,
    "incomplete": pl.Boolean,
    "n_skipped": pl.Int64,
    "output_file": pl.String,
    "finished_at": pl.String,
    "scorer_version": pl.Int64,
}
#: Columns added after files were first written: a file without them reads with them null.
LATER_COLUMNS = ("scorer_version",)

# A row replaces an earlier one only when all of these match: a --limit smoke run, another
# seed or another precision never replaces a full run's row.
UPSERT_KEY = ("model", "task", "n_shot", "metric", "seed", "limit", "settings")


@frozen
class AggregateRow:
    """One line of aggregate.csv. ``performance`` is a fraction; ``stderr`` a bootstrap SEM; ``scorer_version``
    the version of the kind's grading rules (MCQ's parser), None for a kind without such rules."""

    model: str
    benchmark: str
    task: str
    task_type: str
    n_shot: int
    metric: str
    performance: float
    stderr: float | None
    n_samples: int
    seed: int
    limit: int | None
    settings: str
    run_id: str
    default_settings: bool
    incomplete: bool
    n_skipped: int
    output_file: str
    finished_at: str
    scorer_version: int | None = None


@frozen
class RunFacts:
    """What every aggregate row of one run shares."""

    model: str
    benchmark: str
    task_type: str
    n_samples: int
    seed: int
    limit: int | None
    settings: str
    default_settings: bool
    run_id: str
    incomplete: bool
    n_skipped: int
    output_file: str
    finished_at: str
    scorer_version: int | None = None


def run_rows(
    facts: RunFacts,
    variant: str,
    metrics: Mapping[str, MetricValue],
    headline: tuple[str, str] | None,
) -> list[AggregateRow]:
    """One row per metric of ``variant``, plus the benchmark's rollup row unless ``headline`` is None.

    ``headline`` is (variant metric, benchmark headline metric): the rollup row has ``task`` =
    the benchmark name and carries the variant metric under the headline name, keeping the
    variant's ``task_type``, so that a CLIP and a VLM line up under one task in ``mill collect``.
    When the variant is named like its benchmark and its metric is the headline, the variant
    row is the rollup row. None (a variant the model does not get by default) adds no rollup row.
    """
    shared = asdict(facts)
    rows = [
        AggregateRow(task=variant, n_shot=0, metric=name, performance=m.value, stderr=m.stderr, **shared)
        for name, m in metrics.items()
    ]
    if headline is None:
        return rows
    source, target = headline
    if (variant, source) != (facts.benchmark, target):
        value = metrics[source]
        rows.append(
            AggregateRow(
                task=facts.benchmark,
                n_shot=0,
                metric=target,
                performance=value.value,
                stderr=value.stderr,
                **shared,
            )
        )
    return rows
