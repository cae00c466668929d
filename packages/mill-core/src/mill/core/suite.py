"""Suites: TOML files that name a list of benchmarks, run as one and summarised by an unweighted mean.

A suite file lives in a ``suites/`` folder beside the specs (the built-in ``specs/suites/``, or
``DIR/suites/`` for each directory of ``MILL_SPEC_PATH``)::

    name = "imagenet_robustness"
    description = "..."
    benchmarks = ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "objectnet"]
    unavailable = { winogavil = "why Mill cannot evaluate it" }   # optional

``mill eval MODEL SUITE`` runs every member (validated up front, like a comma list); ``mill collect`` shows
the members and their mean only where every member has a result with the same settings. The mean is a view:
it is never written to aggregate.csv. A member listed under ``unavailable`` counts in the suite's size but is
never run: the mean is over the others, and says so ("0.6123 (37 of 38, winogavil missing)").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import polars as pl
from attrs import Factory, frozen

from mill.core.errors import SpecError, UnknownBenchmarkError
from mill.core.registry import SPEC_PATH_ENV, SpecRegistry, builtin_spec_dir
from mill.core.spec import Spec
from mill.core.spec import _structure as structure
from mill.core.tables import MISSING, REPORTED_COLUMNS, ReportedTable, _cell
from mill.core.tomlfile import read_toml

#: The folder, beside a directory of specs, that holds suite files.
SUITES_FOLDER = "suites"
#: The column of a suite table that holds the mean, named so that it cannot pass for a benchmark's result.
MEAN_COLUMN = "mean (unweighted)"
#: What makes two results comparable in a suite mean.
SAME_SETTINGS = ("task_type", "settings", "default_settings", "limit")


@frozen
class _SuiteFile:
    name: str
    description: str
    benchmarks: tuple[str, ...]
    unavailable: dict[str, str] = Factory(dict)


@frozen
class Suite:
    """A validated suite file: its members are benchmark (or variant) names, in display order."""

    name: str
    description: str
    benchmarks: tuple[str, ...]
    path: Path
    #: Members the suite counts but Mill cannot evaluate (no task kind for them), each with the reason.
    unavailable: Mapping[str, str] = Factory(dict)

    @property
    def size(self) -> int:
        """How many members the suite has, those Mill cannot evaluate included."""
        return len(self.benchmarks) + len(self.unavailable)


@frozen
class SuiteMean:
    """A suite's score over its members' values (each member's headline metric): their unweighted mean, as
    DataComp's ``aggregate_scores.py`` averages its datasets' main metrics, or None unless every member Mill
    can evaluate has a value. Members Mill cannot evaluate are named in :attr:`text`, never silently dropped."""

    value: float | None
    present: int
    size: int
    unavailable: tuple[str, ...]

    @property
    def text(self) -> str:
        """``0.6123``; ``0.6123 (37 of 38, winogavil missing)``; ``— (3 of 5)`` while members lack a value."""
        missing = f", {', '.join(self.unavailable)} missing" if self.unavailable else ""
        if self.value is None:
            return f"{MISSING} ({self.present} of {self.size}{missing})"
        return f"{self.value:.4f}" + (f" ({self.present} of {self.size}{missing})" if missing else "")


def suite_mean(suite: Suite, values: Mapping[str, float | None]) -> SuiteMean:
    """The mean of ``values`` (by member name) over ``suite``'s evaluable members (pure)."""
    present = [value for member in suite.benchmarks if (value := values.get(member)) is not None]
    mean = sum(present) / len(present) if len(present) == len(suite.benchmarks) else None
    return SuiteMean(mean, len(present), suite.size, tuple(suite.unavailable))


def suite_metric(suite: Suite, specs: Mapping[str, Spec]) -> str:
    """The metric a suite's mean averages: the members' common headline metric, else "headline metric"
    (DataComp's suite mixes top-1, mean per-class recall, retrieval recall and worst-group accuracy)."""
    metrics = {specs[m].headline_metric if m in specs else "acc" for m in suite.benchmarks}
    return metrics.pop() if len(metrics) == 1 else "headline metric"


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


def load_suite(file: Path) -> Suite:
    """Read one suite file.

    Raises:
        SpecError: naming the file and key (unknown keys, wrong types, no members, a member listed twice).
    """
    data, _ = read_toml(file, "suite", SpecError)
    parsed = structure(data, _SuiteFile, file, "")
    if not parsed.benchmarks:
        raise SpecError(f"{file}: benchmarks: a suite needs at least one benchmark")
    if len(set(parsed.benchmarks)) != len(parsed.benchmarks):
        raise SpecError(f"{file}: benchmarks: a benchmark is listed more than once")
    for member, reason in parsed.unavailable.items():
        if member in parsed.benchmarks or not reason.strip():
            raise SpecError(f"{file}: unavailable.{member}: name a member not in benchmarks, with the reason")
    return Suite(parsed.name, parsed.description, parsed.benchmarks, file, dict(parsed.unavailable))


def discover_suites(env: Mapping[str, str] | None = None) -> dict[str, Suite]:
    """The built-in suites, then those under each ``MILL_SPEC_PATH`` directory's ``suites/`` (a later one
    with the same name replaces an earlier one, as for specs)."""
    env = os.environ if env is None else env
    folders = [builtin_spec_dir() / SUITES_FOLDER]
    folders += [Path(d) / SUITES_FOLDER for d in filter(None, env.get(SPEC_PATH_ENV, "").split(os.pathsep))]
    suites: dict[str, Suite] = {}
    for folder in folders:
        for file in sorted(folder.glob("*.toml")):
            suite = load_suite(file)
            suites[suite.name] = suite
    return suites


def expand_benchmarks(names: Sequence[str], suites: Mapping[str, Suite], registry: SpecRegistry) -> list[str]:
    """``names`` with every suite replaced by its members (a benchmark or variant of the same name wins).

    Raises:
        UnknownBenchmarkError: a suite member that no spec defines, naming the suite file.
    """
    expanded: list[str] = []
    for name in names:
        if name in suites and not _is_benchmark(name, registry):
            suite = suites[name]
            missing = missing_members(suite, registry)
            if len(missing) == 1:
                raise UnknownBenchmarkError(f"{suite.path}: suite {suite.name!r}: {next(iter(missing.values()))}")
            if missing:
                raise UnknownBenchmarkError(
                    f"{suite.path}: suite {suite.name!r}: no spec defines {', '.join(missing)}; add them with --spec"
                    " FILE or a directory in MILL_SPEC_PATH (`mill ls` lists the known benchmarks)"
                )
            expanded.extend(suite.benchmarks)
        else:
            expanded.append(name)
    return expanded


def missing_members(suite: Suite, registry: SpecRegistry) -> dict[str, str]:
    """The members of ``suite`` that no spec defines, each with the registry's message (close matches)."""
    missing = {}
    for member in suite.benchmarks:
        try:
            registry.select(member)
        except UnknownBenchmarkError as exc:
            missing[member] = str(exc)
    return missing


def _is_benchmark(name: str, registry: SpecRegistry) -> bool:
    return name in registry.specs or any(name in spec.variants for spec in registry.specs.values())


def suites_to_show(
    rows: pl.DataFrame, suites: Mapping[str, Suite], named: Sequence[str], *, metric: str | None = None
) -> list[Suite]:
    """The suites a collect summarises: those ``named`` (``--benchmarks``), else every suite with results
    for at least two of its members (one member's table already shows that member)."""
    if metric not in (None, "acc"):
        return []
    if named:
        return [suites[name] for name in named if name in suites]
    tasks = set(rows.get_column("task").to_list()) if not rows.is_empty() else set()
    return [suite for suite in suites.values() if len(tasks & set(suite.benchmarks)) >= 2]


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
        .with_columns(pl.col("default_settings").fill_null(True), cell=_cell())
        .sort("finished_at")
        .group_by(["model", *SAME_SETTINGS, "task"], maintain_order=True)
        .agg(pl.col("cell").last(), pl.col("performance").last(), pl.col("finished_at").last())
    )


def suite_tables(rows: pl.DataFrame, suites: Iterable[Suite], specs: Mapping[str, Spec]) -> list[SuiteTable]:
    """For every suite with a result for any member: one row per model and settings, each member's cell (as
    in :func:`mill.core.tables.metric_tables`, :data:`MISSING` when absent) and the unweighted mean of the
    members, or ``— (k of n)`` unless all ``n`` members have a result with those settings."""
    tables = []
    for suite in suites:
        cells = _member_cells(rows, suite, specs)
        if cells.is_empty():
            continue
        records: list[dict[str, str]] = []
        for _, group in cells.group_by(["model", *SAME_SETTINGS], maintain_order=True):
            by_task = {row["task"]: row for row in group.iter_rows(named=True)}
            record = {"Model": str(group.get_column("model")[0])}
            for member in suite.benchmarks:
                record[member] = str(by_task[member]["cell"]) if member in by_task else MISSING
            record[MEAN_COLUMN] = suite_mean(suite, {m: row["performance"] for m, row in by_task.items()}).text
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
                task, metric = baseline.variant or spec.name, baseline.metric or spec.headline_metric
                if (task, metric) == (spec.name, spec.headline_metric) and (not models or baseline.model in models):
                    published.setdefault(baseline.model, {})[spec.name] = baseline.value
        cells = _member_cells(rows, suite, specs)
        measured: dict[str, SuiteMean] = {}
        ordered = cells.sort(["default_settings", "finished_at"]) if not cells.is_empty() else cells
        for _, group in ordered.group_by(["model", *SAME_SETTINGS], maintain_order=True):
            by_task = {row["task"]: row["performance"] for row in group.iter_rows(named=True)}
            result = suite_mean(suite, by_task)
            model = str(group.get_column("model")[0])
            if result.value is not None or model not in measured or measured[model].value is None:
                measured[model] = result
        if not published and not measured:
            continue
        source = f"mean of the {len(suite.benchmarks)} members' [[reported]]"
        records = []
        for model in [*published, *sorted(set(measured) - set(published))]:
            mill = measured.get(model)
            mill_value, mill_text = (mill.value, mill.text) if mill else (None, MISSING)
            ours = published.get(model, {})
            reported = suite_mean(suite, ours) if ours else None
            reported_value, reported_text = (reported.value, reported.text) if reported else (None, MISSING)
            delta = MISSING
            if mill_value is not None and reported_value is not None:
                delta = f"{round(mill_value - reported_value, 4) + 0.0:+.4f}"
            values = (model, mill_text, reported_text, source if ours else MISSING, delta)
            records.append(dict(zip(REPORTED_COLUMNS, values, strict=True)))
        frame = pl.DataFrame(records, schema={column: pl.String for column in REPORTED_COLUMNS})
        tables.append(ReportedTable(suite.name, f"{MEAN_COLUMN} (suite)", suite_metric(suite, specs), frame))
    return tables
