"""The tables the CLI prints: aggregate rows rolled up into model × task tables, one per metric (never averaged
together), Mill's numbers beside the published ones a spec lists (``[[reported]]``), a served model's usage, and
``mill compare``'s paired comparisons (computed by :mod:`mill.core.comparison`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import polars as pl
from attrs import frozen

from mill.core.comparison import Comparison
from mill.core.errors import MillError
from mill.core.spec import Spec
from mill.core.task_kind import installed_kinds

# A cell from a run with non-default settings (another precision, dtype, ...).
SETTINGS_MARK = "*"
#: A cell from a ``--limit`` run, with its sample count (``collect --all`` shows them).
LIMIT_MARK = "(n={})"
#: A cell with nothing to show: no run, or no published number.
MISSING = "—"
REPORTED_COLUMNS = ("Model", "Mill", "Reported", "Source", "Δ")


@frozen
class MetricTable:
    """One metric's pivot: a ``model`` column, then one column per task, formatted cells."""

    metric: str
    frame: pl.DataFrame

    @property
    def title(self) -> str:
        return self.metric

    @property
    def key_columns(self) -> dict[str, str]:
        """What tells this table's rows from another table's when tables are concatenated (CSV)."""
        return {"metric": self.metric}


@frozen
class ReportedTable:
    """One variant (or a benchmark's rollup) and metric: Mill's number beside the spec's reported one, per model.

    ``frame`` has the columns :data:`REPORTED_COLUMNS`, every cell a string (:data:`MISSING` when empty).
    """

    benchmark: str
    #: The aggregate's ``task`` value: a variant's name, or the benchmark's for its rollup row.
    variant: str
    metric: str
    frame: pl.DataFrame

    @property
    def title(self) -> str:
        return f"{self.benchmark}: {self.variant} {self.metric}"

    @property
    def key_columns(self) -> dict[str, str]:
        # "task" is the CSV/JSON column users read; the name stays.
        return {"benchmark": self.benchmark, "task": self.variant, "metric": self.metric}


@frozen
class UsageTable:
    """What the runs of served models (the ``openai`` backend) cost: one row per run, with its model and task
    and the ``requests``, ``input_tokens``, ``output_tokens`` and ``cost_usd`` its manifest records
    (``run_info.usage``); every cell a string, :data:`MISSING` where a run recorded no cost."""

    frame: pl.DataFrame

    @property
    def title(self) -> str:
        return "usage of served models (requests, tokens, cost in USD)"

    @property
    def key_columns(self) -> dict[str, str]:
        return {"metric": "usage"}


def usage_table(rows: pl.DataFrame, usage_of: Callable[[str], Mapping[str, Any] | None]) -> UsageTable | None:
    """The :class:`UsageTable` of the runs behind ``rows`` whose usage ``usage_of(output_file)`` finds (a
    manifest's ``run_info.usage``); None when no run has one. A run appears once, under its variant's task."""
    if rows.is_empty():
        return None
    runs = (
        rows.with_columns(rollup=pl.col("task") == pl.col("benchmark"))
        .sort("rollup", "finished_at")
        .unique("output_file", keep="first", maintain_order=True)
        .sort("model", "task", "finished_at")
    )
    records = []
    for model, task, output_file in runs.select("model", "task", "output_file").iter_rows():
        usage = usage_of(output_file)
        if usage is None:
            continue
        cost = usage.get("cost_usd")
        records.append(
            {
                "model": model,
                "task": task,
                "requests": str(usage.get("requests", MISSING)),
                "input_tokens": str(usage.get("input_tokens", MISSING)),
                "output_tokens": str(usage.get("output_tokens", MISSING)),
                "cost_usd": MISSING if cost is None else f"{cost:.4f}",
            }
        )
    return UsageTable(pl.DataFrame(records, schema=dict.fromkeys(USAGE_COLUMNS, pl.String))) if records else None


USAGE_COLUMNS = ("model", "task", "requests", "input_tokens", "output_tokens", "cost_usd")


class UnknownMetricError(MillError):
    """``--metric`` names a metric no stored result has."""


def select_rows(
    rows: pl.DataFrame,
    *,
    metric: str | None = None,
    models: Sequence[str] = (),
    benchmarks: Sequence[str] = (),
    include_all: bool = False,
) -> pl.DataFrame:
    """The rows a collect shows: full runs (no --limit) unless ``include_all``, filtered by metric,
    model and benchmark (a benchmark filter matches the benchmark or the task name).

    Raises:
        UnknownMetricError: ``metric`` is none of the metrics in ``rows`` (when there are rows), naming those.
    """
    known = rows.get_column("metric").unique().sort().to_list()
    if metric and known and metric not in known:
        raise UnknownMetricError(f"--metric {metric}: no stored result has this metric; they have {', '.join(known)}")
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
    cells = rows.sort("finished_at").with_columns(cell=metric_cell())
    tables = []
    for metric in cells.get_column("metric").unique(maintain_order=True).to_list():
        subset = cells.filter(pl.col("metric") == metric)
        pivot = subset.pivot(on="task", index="model", values="cell", aggregate_function="last").sort("model")
        tables.append(MetricTable(metric, pivot))
    return tables


def reported_tables(
    rows: pl.DataFrame,
    specs: Iterable[Spec],
    *,
    metric: str | None = None,
    models: Sequence[str] = (),
) -> list[ReportedTable]:
    """Mill's results in ``rows`` beside the reported baselines of ``specs``: Model | Mill | Reported | Source | Δ.

    One table per (task, metric) that a spec's baselines name (a baseline without ``variant`` names the
    benchmark's rollup task, one without ``metric`` the headline metric), plus the rollup task with the
    headline metric when ``rows`` hold results for it. A table lists every model with a baseline, in the
    spec's order (Mill is :data:`MISSING` where no run exists), then every other model with a run, by name
    (Reported, Source and Δ are :data:`MISSING`). Mill cells are formatted and marked as in
    :func:`metric_tables`; of several runs in one cell a default-settings run wins, then the latest finished.
    Δ is Mill − Reported. ``metric`` and ``models`` restrict the tables and baselines as in :func:`select_rows`.
    """
    runs = (
        rows.with_columns(pl.col("default_settings").fill_null(True), cell=metric_cell())
        .sort(["default_settings", "finished_at"])
        .group_by(["model", "task", "metric"], maintain_order=True)
        .agg(pl.col("cell").last(), pl.col("performance").last())
    )
    tables = []
    for spec in specs:
        baselines = [b for b in spec.reported if not models or b.model in models]
        pairs = dict.fromkeys((b.variant or spec.name, b.metric or spec.headline_metric) for b in baselines)
        rollup = runs.filter((pl.col("task") == spec.name) & (pl.col("metric") == spec.headline_metric))
        if not rollup.is_empty():
            pairs.setdefault((spec.name, spec.headline_metric))
        for variant, metric_name in pairs:
            if metric and metric_name != metric:
                continue
            named = [
                b
                for b in baselines
                if (b.variant or spec.name, b.metric or spec.headline_metric) == (variant, metric_name)
            ]
            reported = pl.DataFrame(
                {
                    "model": [b.model for b in named],
                    "reported": [b.value for b in named],
                    "source": [b.source for b in named],
                    "order": list(range(len(named))),
                },
                schema={"model": pl.String, "reported": pl.Float64, "source": pl.String, "order": pl.Int64},
            )
            measured = runs.filter((pl.col("task") == variant) & (pl.col("metric") == metric_name))
            joined = reported.join(measured.drop("task", "metric"), on="model", how="full", coalesce=True)
            frame = joined.sort([pl.col("order").fill_null(len(named)), "model"]).select(
                pl.col("model").alias("Model"),
                pl.col("cell").fill_null(MISSING).alias("Mill"),
                _fraction(pl.col("reported"), "{:.4f}").fill_null(MISSING).alias("Reported"),
                pl.col("source").fill_null(MISSING).alias("Source"),
                _delta(pl.col("performance") - pl.col("reported")).fill_null(MISSING).alias("Δ"),
            )
            tables.append(ReportedTable(spec.name, variant, metric_name, frame))
    return tables


def _fraction(values: pl.Expr, pattern: str) -> pl.Expr:
    return values.map_elements(pattern.format, return_dtype=pl.String)


def _delta(values: pl.Expr) -> pl.Expr:
    # Rounded first so that a difference below the shown precision reads +0.0000, not -0.0000.
    return values.round(4).map_elements(lambda value: f"{value + 0.0:+.4f}", return_dtype=pl.String)


def legend() -> str:
    """What the marks in result tables mean: each task kind's own mark, then non-default settings."""
    # Kinds that share a mark (both multiple-choice kinds) share its legend entry.
    marks = dict.fromkeys(f"{kind.mark.symbol} {kind.mark.legend}" for kind in installed_kinds().values() if kind.mark)
    limit = f"{LIMIT_MARK.format('N')} a --limit run of N samples (shown with --all)"
    return "; ".join([*marks, f"{SETTINGS_MARK} non-default settings", limit])


def _kind_mark() -> pl.Expr:
    """The mark of each row's task kind (``task_type``), as its kind declares it; none for unknown kinds."""
    marks = {name: kind.mark.symbol for name, kind in installed_kinds().items() if kind.mark}
    return pl.col("task_type").replace_strict(marks, default="", return_dtype=pl.String)


def metric_cell() -> pl.Expr:
    """A result as shown: the fraction to four places, marked by its task kind, for non-default settings, and
    with its sample count for a ``--limit`` run (which is never the benchmark's number)."""
    return (
        _fraction(pl.col("performance"), "{:.4f}")
        + _kind_mark()
        + pl.when(pl.col("default_settings").fill_null(True)).then(pl.lit("")).otherwise(pl.lit(SETTINGS_MARK))
        + pl.when(pl.col("limit").is_null())
        .then(pl.lit(""))
        .otherwise(pl.format(" " + LIMIT_MARK, pl.col("n_samples")))
    )


_NUMBER_CELL = re.compile(r"([+-]?\d+(?:\.\d+)?)(.*)")


#: Columns of result tables that hold names, never numbers.
LABEL_COLUMNS = ("model", "Model", "Source")


def json_records(frame: pl.DataFrame, labels: Iterable[str] = LABEL_COLUMNS) -> list[dict[str, Any]]:
    """``frame``'s rows for JSON: a cell holding a number is that number, an integer where it is written without
    a decimal point (:data:`MISSING` is null), and its marks, if any, go under ``marks`` by column; the
    ``labels`` columns (model names) stay text."""
    keep = set(labels)
    records = []
    for row in frame.iter_rows(named=True):
        record: dict[str, Any] = {}
        marks: dict[str, str] = {}
        for column, cell in row.items():
            match = _NUMBER_CELL.fullmatch(cell) if isinstance(cell, str) and column not in keep else None
            if match:
                number = match.group(1)
                # A count (requests, tokens) stays an integer; a formatted metric is a float.
                record[column] = float(number) if "." in number else int(number)
                if match.group(2).strip():
                    marks[column] = match.group(2).strip()
            else:
                record[column] = None if cell == MISSING else cell
        records.append({**record, "marks": marks} if marks else record)
    return records


@frozen
class ComparisonTable:
    """A table of comparisons as ``mill compare`` prints it: a title, a frame whose numbers stay numbers, and
    the columns that tell its rows from another table's when tables are concatenated (CSV)."""

    title: str
    frame: pl.DataFrame
    key_columns: Mapping[str, str]


def comparison_tables(comparisons: Sequence[Comparison]) -> list[ComparisonTable]:
    """``comparisons`` as tables: the samples each pair shares, every metric's difference with its interval,
    McNemar's test, then per pair the classes that differ most."""
    samples = pl.DataFrame(
        [(c.baseline, c.other, c.n_shared, c.n_baseline_only, c.n_other_only) for c in comparisons],
        schema=["baseline", "run", "shared", "baseline only", "run only"],
        orient="row",
    )
    level = f"{comparisons[0].confidence:.0%}" if comparisons else ""
    differences = pl.concat(
        [
            c.metrics.select(
                pl.lit(c.baseline).alias("baseline"),
                pl.lit(c.other).alias("run"),
                "metric",
                pl.col("baseline").alias("baseline value"),
                pl.col("other").alias("run value"),
                pl.col("difference"),
                "ci_low",
                "ci_high",
            )
            for c in comparisons
        ]
    )
    mcnemar = pl.DataFrame(
        [
            (c.baseline, c.other, c.n_shared, c.mcnemar.baseline_only, c.mcnemar.other_only, c.mcnemar.p_value)
            for c in comparisons
        ],
        schema=["baseline", "run", "shared", "baseline only right", "run only right", "p_value"],
        orient="row",
    )
    tables = [
        ComparisonTable("Shared samples", samples, {"table": "samples"}),
        ComparisonTable(
            f"Differences (run − baseline) with their paired bootstrap {level} interval",
            differences,
            {"table": "differences"},
        ),
        ComparisonTable("McNemar's exact test of accuracy", mcnemar, {"table": "mcnemar"}),
    ]
    for c in comparisons:
        classes = c.classes.rename({"label": "class", "baseline": "baseline accuracy", "other": "run accuracy"})
        tables.append(
            ComparisonTable(
                f"Classes differing most: {c.other} vs {c.baseline}",
                classes.drop("gold"),
                {"table": "classes", "baseline": c.baseline, "run": c.other},
            )
        )
    return tables
