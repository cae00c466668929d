"""Rolling aggregate rows up into model × task tables, one per metric (never averaged together)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from attrs import frozen

# A cell from a multiple-choice variant is marked: 10-way and 1000-way accuracies are not one scale.
MCQ_MARK = "†"
# A cell from a run with non-default settings (another precision, dtype, ...).
SETTINGS_MARK = "*"


@frozen
class MetricTable:
    """One metric's pivot: a ``model`` column, then one column per task, formatted cells."""

    metric: str
    frame: pl.DataFrame


def select_rows(
    rows: pl.DataFrame,
    *,
    metric: str | None = None,
    models: Sequence[str] = (),
    benchmarks: Sequence[str] = (),
    include_all: bool = False,
) -> pl.DataFrame:
    """The rows a collect shows: full runs (no --limit) unless ``include_all``, filtered by metric,
    model and benchmark (a benchmark filter matches the benchmark or the task name)."""
    selected = rows
    if not include_all:
        selected = selected.filter(pl.col("limit").is_null())
    if metric:
        selected = selected.filter(pl.col("metric") == metric)
    if models:
        selected = selected.filter(pl.col("model").is_in(list(models)))
    if benchmarks:
        selected = selected.filter(pl.col("benchmark").is_in(list(benchmarks)) | pl.col("task").is_in(list(benchmarks)))
    return selected


def metric_tables(rows: pl.DataFrame) -> list[MetricTable]:
    """Pivot ``rows`` into one model × task table per metric. Cells are the performance as a
    fraction, marked † for a generative multiple-choice variant and * for non-default settings.
    When several rows fall in one cell (several seeds or settings), the latest finished wins."""
    if rows.is_empty():
        return []
    cells = rows.sort("finished_at").with_columns(
        cell=pl.col("performance").map_elements(lambda value: f"{value:.4f}", return_dtype=pl.String)
        + pl.when(pl.col("task_type") == "generative_mcq").then(pl.lit(MCQ_MARK)).otherwise(pl.lit(""))
        + pl.when(pl.col("default_settings").fill_null(True)).then(pl.lit("")).otherwise(pl.lit(SETTINGS_MARK))
    )
    tables = []
    for metric in cells.get_column("metric").unique(maintain_order=True).to_list():
        subset = cells.filter(pl.col("metric") == metric)
        pivot = subset.pivot(on="task", index="model", values="cell", aggregate_function="last").sort("model")
        tables.append(MetricTable(metric, pivot))
    return tables
