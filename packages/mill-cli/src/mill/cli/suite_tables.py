"""The tables ``mill collect`` shows for suites: each member's result and the members' unweighted mean per model
and settings, and that mean beside the mean of the members' published numbers. The mean is a view: it is never
written to aggregate.csv. (Suites themselves, loading and expansion, are :mod:`mill.core.suite`.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import polars as pl
from attrs import frozen

from mill.cli.tables import MISSING, REPORTED_COLUMNS, ReportedTable, metric_cell
from mill.core.spec import Spec
from mill.core.suite import Suite, SuiteMean, suite_mean, suite_metric

#: The column of a suite table that holds the mean, named so that it cannot pass for a benchmark's result.
MEAN_COLUMN = "mean (unweighted)"
#: What makes two results comparable in a suite mean.
SAME_SETTINGS = ("task_type", "settings", "default_settings", "limit")


@frozen
class SuiteTable:
    """One suite's members and mean, per model and settings: ``Model``, a column per member, :data:`MEAN_COLUMN`."""

    suite: str
    metric: str
    frame: pl.DataFrame

    @property
    def title(self) -> str:
        return f"{self.suite} (suite): {self.metric}, {MEAN_COLUMN} of the members"

    @property
    def key_columns(self) -> dict[str, str]:
        return {"suite": self.suite, "metric": self.metric}


def suites_to_show(
    rows: pl.DataFrame, suites: Mapping[str, Suite], named: Sequence[str], *, metric: str | None = None
) -> list[Suite]:
    """The suites a collect summarises: those ``named`` (``--benchmarks``), else every suite with results
    for at least two of its members (one member's table already shows that member)."""
    if metric not in (None, "acc"):
        return []
    if named:
        return [suites[name] for name in named if name in suites]
    with_results = set(rows.get_column("task").to_list()) if not rows.is_empty() else set()
    return [suite for suite in suites.values() if len(with_results & set(suite.benchmarks)) >= 2]


def _member_cells(rows: pl.DataFrame, suite: Suite, specs: Mapping[str, Spec]) -> pl.DataFrame:
    """The latest result of each member's rollup task and headline metric, per model and settings."""
    wanted = [
        (pl.col("task") == member) & (pl.col("metric") == (specs[member].headline_metric if member in specs else "acc"))
        for member in suite.benchmarks
    ]
    if rows.is_empty() or not wanted:
        return rows.clear()
    condition = wanted[0]
    for extra in wanted[1:]:
        condition = condition | extra
    return (
        rows.filter(condition)
        .with_columns(pl.col("default_settings").fill_null(True), cell=metric_cell())
        .sort("finished_at")
        .group_by(["model", *SAME_SETTINGS, "task"], maintain_order=True)
        .agg(pl.col("cell").last(), pl.col("performance").last(), pl.col("finished_at").last())
    )


def mean_text(mean: SuiteMean) -> str:
    """``0.6123``; ``0.6123 (37 of 38, winogavil missing)`` over the members Mill can evaluate; ``— (3 of 5)``
    while members lack a value."""
    missing = f", {', '.join(mean.unavailable)} missing" if mean.unavailable else ""
    if mean.value is None:
        return f"{MISSING} ({mean.present} of {mean.size}{missing})"
    return f"{mean.value:.4f}" + (f" ({mean.present} of {mean.size}{missing})" if missing else "")


def suite_tables(rows: pl.DataFrame, suites: Iterable[Suite], specs: Mapping[str, Spec]) -> list[SuiteTable]:
    """For every suite with a result for any member: one row per model and settings, each member's cell (as
    in :func:`mill.cli.tables.metric_tables`, :data:`MISSING` when absent) and the unweighted mean of the
    members (:func:`mean_text`), or ``— (k of n)`` unless all ``n`` members have a result with those settings."""
    tables = []
    for suite in suites:
        cells = _member_cells(rows, suite, specs)
        if cells.is_empty():
            continue
        records: list[dict[str, str]] = []
        for _, group in cells.group_by(["model", *SAME_SETTINGS], maintain_order=True):
            by_member = {row["task"]: row for row in group.iter_rows(named=True)}
            record = {"Model": str(group.get_column("model")[0])}
            for member in suite.benchmarks:
                record[member] = str(by_member[member]["cell"]) if member in by_member else MISSING
            values = {member: row["performance"] for member, row in by_member.items()}
            record[MEAN_COLUMN] = mean_text(suite_mean(suite, values))
            records.append(record)
        schema = {column: pl.String for column in ("Model", *suite.benchmarks, MEAN_COLUMN)}
        frame = pl.DataFrame(records, schema=schema).sort("Model", maintain_order=True)
        tables.append(SuiteTable(suite.name, suite_metric(suite, specs), frame))
    return tables


def suite_reported_tables(
    rows: pl.DataFrame, suites: Iterable[Suite], specs: Mapping[str, Spec], *, models: Sequence[str] = ()
) -> list[ReportedTable]:
    """Each suite's mean beside the mean of its members' published numbers: Model | Mill | Reported | Source | Δ.

    A side's mean exists only where every member has a value (Mill: a result with one set of settings,
    default settings preferred, then the latest; Reported: a ``[[reported]]`` entry for the member's rollup
    task and headline metric); otherwise it reads ``— (k of n)``.
    """
    tables = []
    for suite in suites:
        members = [specs[m] for m in suite.benchmarks if m in specs]
        published: dict[str, dict[str, float]] = {}
        for spec in members:
            for baseline in spec.reported:
                variant, metric = baseline.variant or spec.name, baseline.metric or spec.headline_metric
                if (variant, metric) == (spec.name, spec.headline_metric) and (not models or baseline.model in models):
                    published.setdefault(baseline.model, {})[spec.name] = baseline.value
        cells = _member_cells(rows, suite, specs)
        measured: dict[str, SuiteMean] = {}
        ordered = cells.sort(["default_settings", "finished_at"]) if not cells.is_empty() else cells
        for _, group in ordered.group_by(["model", *SAME_SETTINGS], maintain_order=True):
            by_member = {row["task"]: row["performance"] for row in group.iter_rows(named=True)}
            result = suite_mean(suite, by_member)
            model = str(group.get_column("model")[0])
            if result.value is not None or model not in measured or measured[model].value is None:
                measured[model] = result
        if not published and not measured:
            continue
        source = f"mean of the {len(suite.benchmarks)} members' [[reported]]"
        records = []
        for model in [*published, *sorted(set(measured) - set(published))]:
            mill = measured.get(model)
            mill_value, mill_text = (mill.value, mean_text(mill)) if mill else (None, MISSING)
            ours = published.get(model, {})
            reported = suite_mean(suite, ours) if ours else None
            reported_value, reported_text = (reported.value, mean_text(reported)) if reported else (None, MISSING)
            delta = MISSING
            if mill_value is not None and reported_value is not None:
                delta = f"{round(mill_value - reported_value, 4) + 0.0:+.4f}"
            values = (model, mill_text, reported_text, source if ours else MISSING, delta)
            records.append(dict(zip(REPORTED_COLUMNS, values, strict=True)))
        frame = pl.DataFrame(records, schema={column: pl.String for column in REPORTED_COLUMNS})
        tables.append(ReportedTable(suite.name, f"{MEAN_COLUMN} (suite)", suite_metric(suite, specs), frame))
    return tables
