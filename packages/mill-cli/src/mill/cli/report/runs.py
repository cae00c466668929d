"""The runs a report shows: read back from a results directory's ``aggregate.csv``, per-sample parquet files
and manifests (docs/outputs.md), one :class:`ReportRun` per model × task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from attrs import frozen

from mill.core.comparison import class_labels
from mill.core.errors import ResultsError, SpecError
from mill.core.metrics import MetricValue
from mill.core.record import RunRecord
from mill.core.registry import SpecRegistry
from mill.core.results import read_aggregate
from mill.core.results_dir import ResultsDir
from mill.core.specfile import load_spec


@frozen
class ReportRun:
    """One stored run: its per-sample frame, its record, and the class names of its benchmark."""

    model: str
    benchmark: str
    task: str
    task_type: str
    frame: pl.DataFrame
    record: RunRecord
    classnames: tuple[str, ...]
    parquet: Path

    @property
    def run_id(self) -> str:
        return self.record.provenance.run_id or self.parquet.stem

    @property
    def metrics(self) -> Mapping[str, MetricValue]:
        """The record's metrics, each with its bootstrap stderr."""
        return self.record.outcome.metrics


def gather_runs(output_dir: Path, *, models: Sequence[str] = (), benchmarks: Sequence[str] = ()) -> list[ReportRun]:
    """The latest run of each model × task in ``output_dir`` (a full run before a ``--limit`` one), in the
    order of ``models`` when given (else the order runs appear in ``aggregate.csv``), then by task.

    Raises:
        ResultsError: no run matches, or a per-sample file or manifest named by ``aggregate.csv`` is missing
            or unreadable.
    """
    rows = read_aggregate(output_dir)
    if models:
        rows = rows.filter(pl.col("model").is_in(list(models)))
    if benchmarks:
        rows = rows.filter(pl.col("benchmark").is_in(list(benchmarks)) | pl.col("task").is_in(list(benchmarks)))
    if rows.is_empty():
        raise ResultsError(
            f"no results in {ResultsDir(output_dir).aggregate_file} match; run `mill eval` first, or check --models "
            "and --benchmarks against the model and task columns of `mill collect --all`"
        )
    order = list(models) or rows.get_column("model").unique(maintain_order=True).to_list()
    chosen = (
        # One row per stored file: the variant's row rather than the rollup row that shares its file.
        rows.sort(pl.col("task") == pl.col("benchmark"), maintain_order=True)
        .unique(["model", "output_file"], keep="first", maintain_order=True)
        # Per model and task, a full run wins over a --limit one, then the newest.
        .sort(pl.col("limit").is_null(), "finished_at", maintain_order=True)
        .unique(["model", "task"], keep="last", maintain_order=True)
    )
    runs = [_read_run(output_dir, row) for row in chosen.iter_rows(named=True)]
    return sorted(runs, key=lambda run: (order.index(run.model), run.benchmark, run.task))


def _read_run(output_dir: Path, row: dict[str, Any]) -> ReportRun:
    results = ResultsDir(output_dir)
    frame, record = results.read_stored_run(row)
    return ReportRun(
        model=row["model"],
        benchmark=row["benchmark"],
        task=record.subject.variant or row["task"],
        task_type=row["task_type"],
        frame=frame,
        record=record,
        classnames=_classnames(record, row["benchmark"], frame),
        parquet=results.files_of(row["output_file"]).per_sample,
    )


def _classnames(record: RunRecord, benchmark: str, frame: pl.DataFrame) -> tuple[str, ...]:
    """The benchmark's class names: from the spec file the run used, else the installed spec of that name,
    else (also for a spec that reads them from its data export) the labels the per-sample file itself names."""
    spec_file = record.subject.spec_file
    names: tuple[str, ...] = ()
    try:
        if spec_file and Path(spec_file).is_file():
            names = load_spec(Path(spec_file)).classnames
        elif benchmark in (specs := SpecRegistry.discover().specs):
            names = specs[benchmark].classnames
    except SpecError:
        pass
    return names or class_labels(frame)
