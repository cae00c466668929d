"""Checking a results directory against what was written, and rebuilding ``aggregate.csv`` from the run records.

Every run's record (:class:`~mill.core.record.RunRecord`) holds the sha256 of its per-sample file and of its own
content (:func:`mill.core.checksum.manifest_digest`). :func:`verify` checks every aggregate row against them,
recomputes the run's metrics from the per-sample file through its task kind (no spec or model needed:
:meth:`TaskKind.metrics`), and compares the row with the one the record yields. Records written before Mill
recorded hashes are reported as unverifiable, not as mismatched. :func:`rebuild` regenerates ``aggregate.csv``
from the records that check.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from attrs import asdict, frozen

from mill.core.arguments import SEEDS
from mill.core.checksum import sha256_file
from mill.core.metrics import MetricValue
from mill.core.record import RunRecord
from mill.core.results import AGGREGATE_SCHEMA, UPSERT_KEY, AggregateRow, read_aggregate, rebuild_aggregate
from mill.core.results_dir import ResultsDir, RunFiles, StoredRecord, records
from mill.core.task_kind import UnknownKindError, get_kind

# Metrics are recomputed exactly (seeded bootstrap); the tolerance only absorbs CSV float formatting.
_REL_TOL = 1e-9


class Status(str, enum.Enum):
    VERIFIED = "verified"
    MISMATCHED = "mismatched"
    UNVERIFIABLE = "unverifiable"


@frozen
class RowCheck:
    """The verdict on one aggregate row, and why (empty when verified)."""

    model: str
    task: str
    metric: str
    output_file: str
    status: Status
    detail: str


@frozen
class RunCheck:
    """The verdict on one run's files, shared by the rows pointing at them; ``rows`` are the rows its
    record yields and ``record`` the record (both empty unless verified)."""

    status: Status
    detail: str
    rows: Sequence[AggregateRow] = ()
    record: RunRecord | None = None


def verify(output_dir: Path) -> list[RowCheck]:
    """One :class:`RowCheck` per row of ``output_dir``'s ``aggregate.csv``, in file order.

    Raises:
        DamagedResultsError: ``aggregate.csv`` itself is damaged (``--rebuild`` regenerates it).
        ResultsError: ``output_dir`` does not exist (a typo must not pass for a clean bill).
    """
    ResultsDir(output_dir).check_exists()
    aggregate = read_aggregate(output_dir)
    runs: dict[str, RunCheck] = {}
    checks = []
    for row in aggregate.iter_rows(named=True):
        output_file = row["output_file"] or ""
        if output_file not in runs:
            runs[output_file] = check_run(output_dir, output_file)
        run = runs[output_file]
        status, detail = run.status, run.detail
        if status is Status.VERIFIED:
            detail = _row_difference(row, run.rows)
            status = Status.MISMATCHED if detail else Status.VERIFIED
        checks.append(RowCheck(row["model"], row["task"], row["metric"], output_file, status, detail))
    return checks


def check_run(output_dir: Path, output_file: str) -> RunCheck:
    """Check one run's per-sample file (``output_file``, relative to ``output_dir``) and its record."""
    results = ResultsDir(output_dir)
    files = results.files_of(output_file)
    if not output_file or not files.per_sample.is_file():
        return RunCheck(Status.MISMATCHED, f"the per-sample file {files.per_sample} is missing")
    return check_stored(results.read_record(files))


def check_stored(stored: StoredRecord) -> RunCheck:
    """Check a run's record (as read) against its per-sample file, and recompute its metrics from that file."""
    record, files = stored.record, stored.files
    if record is None:
        return RunCheck(Status.MISMATCHED, f"the manifest {files.record} {stored.problem}")
    if not record.verifiable:
        return RunCheck(Status.UNVERIFIABLE, f"{files.record} was written before Mill recorded hashes")
    if not stored.intact:
        return RunCheck(Status.MISMATCHED, f"the manifest {files.record} differs from what was written")
    if SEEDS.problem(record.settings.seed):
        # Written by a Mill that ran such seeds; aggregate.csv cannot hold one (every rebuild used to crash).
        return RunCheck(Status.MISMATCHED, f"the manifest {files.record}: seed {SEEDS.problem(record.settings.seed)}")
    if not files.per_sample.is_file():
        return RunCheck(Status.MISMATCHED, f"the per-sample file {files.per_sample} is missing")
    if sha256_file(files.per_sample) != record.files.per_sample_sha256:
        return RunCheck(Status.MISMATCHED, f"the per-sample file {files.per_sample} differs from what was written")
    return _recompute(record, files)


def _recompute(record: RunRecord, files: RunFiles) -> RunCheck:
    """Recompute the metrics of a run whose files check, through its kind, and compare them with the record's."""
    try:
        kind = get_kind(str(record.subject.task_type))
    except UnknownKindError:
        return RunCheck(Status.UNVERIFIABLE, f"the task kind {record.subject.task_type!r} is not installed")
    headline, seed = record.settings.headline, record.settings.seed
    assert headline is not None and seed is not None  # a verifiable record names them
    try:
        frame = pl.read_parquet(files.per_sample)
        recomputed = kind.metrics(frame, headline.metric, seed)
    except Exception as exc:  # a file with the right hash that the kind cannot score is a mismatch, not a crash
        return RunCheck(Status.MISMATCHED, f"cannot recompute the metrics from {files.per_sample} ({exc})")
    stored = record.outcome.metrics
    differing = [
        name for name in stored.keys() | recomputed.keys() if not _same(stored.get(name), recomputed.get(name))
    ]
    if differing:
        return RunCheck(
            Status.MISMATCHED,
            f"the metrics recomputed from {files.per_sample} differ: {', '.join(sorted(differing))}",
        )
    return RunCheck(Status.VERIFIED, "", record.rows(files.output_file), record)


def _row_difference(row: Mapping[str, Any], expected: Sequence[AggregateRow]) -> str:
    """Which columns of ``row`` differ from the manifest's row of the same task and metric ('' if none)."""
    matching = [r for r in expected if (r.task, r.metric) == (row["task"], row["metric"])]
    if not matching:
        return f"its manifest has no {row['task']} {row['metric']} result"
    want = asdict(matching[0])
    differing = [
        column
        for column in AGGREGATE_SCHEMA
        if not (
            _same_number(row[column], want[column]) if isinstance(want[column], float) else row[column] == want[column]
        )
    ]
    return f"differs from its manifest in {', '.join(differing)}" if differing else ""


def _same_number(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=_REL_TOL, abs_tol=1e-12)  # type: ignore[arg-type]


def _same(a: MetricValue | None, b: MetricValue | None) -> bool:
    if a is None or b is None:
        return a is b
    return _same_number(a.value, b.value) and _same_number(a.stderr, b.stderr)


@frozen
class Rebuilt:
    """What :func:`rebuild` did: the new file, the previous one kept aside, the rows written, and the
    records left out with why (their previous rows are kept when they were only unverifiable)."""

    path: Path
    previous: Path | None
    n_rows: int
    left_out: Sequence[tuple[Path, str]]


def rebuild(output_dir: Path) -> Rebuilt:
    """Regenerate ``aggregate.csv`` from every run record under ``output_dir/outputs`` that checks.

    A record that does not check is left out. One written before hashes were recorded cannot give its
    rows, so those of the previous ``aggregate.csv`` that point at it are kept, when that file is readable.
    A copy of the previous file is kept beside as ``aggregate.csv.{time}.bak``. The aggregate's lock is held
    from the first record read to the last write (:func:`~mill.core.results.rebuild_aggregate`).

    Raises:
        ResultsError: ``output_dir`` does not exist.
        ResultsWriteError: the new file could not be written.
    """
    results = ResultsDir(output_dir)
    results.check_exists()
    left_out: list[tuple[Path, str]] = []
    written: list[AggregateRow] = []

    def rows_from(previous: pl.DataFrame | None) -> list[AggregateRow]:
        verified: list[tuple[RunRecord, RunFiles]] = []
        legacy: set[str] = set()
        for stored in records(results):
            run = check_stored(stored)
            if run.status is Status.VERIFIED and run.record is not None:
                verified.append((run.record, stored.files))
                continue
            left_out.append((stored.files.record, run.detail))
            if run.status is Status.UNVERIFIABLE:
                legacy.add(stored.files.output_file)
        kept: list[AggregateRow] = []
        if legacy and previous is not None:
            kept = [AggregateRow(**r) for r in previous.filter(pl.col("output_file").is_in(sorted(legacy))).to_dicts()]
        verified.sort(key=lambda item: item[0].facts("").finished_at)
        rows = [row for record, files in verified for row in _rows_of(record, files, previous)]
        written.extend(_latest_per_key([*kept, *rows]))
        return written

    path, previous_file = rebuild_aggregate(output_dir, rows_from)
    return Rebuilt(path, previous_file, len(written), left_out)


def _rows_of(record: RunRecord, files: RunFiles, previous: pl.DataFrame | None) -> list[AggregateRow]:
    """A record's rows. A record of Mill 0.1.0 names a benchmark metric whether or not its run rolled up (a
    variant the model did not get by default did not): the previous aggregate's rows say which, when readable."""
    rolls_up = None
    if record.settings.rolls_up is None and previous is not None:
        own = previous.filter(pl.col("output_file") == files.output_file)
        if not own.is_empty():
            rolls_up = (
                record.subject.variant == record.subject.benchmark
                or not own.filter(pl.col("task") == record.subject.benchmark).is_empty()
            )
    return record.rows(files.output_file, rolls_up=rolls_up)


def _latest_per_key(rows: Sequence[AggregateRow]) -> list[AggregateRow]:
    """One row per upsert key, the later replacing the earlier, as upserts did."""
    unique: dict[tuple[Any, ...], AggregateRow] = {}
    for row in rows:
        key = tuple(getattr(row, column) for column in UPSERT_KEY)
        unique.pop(key, None)
        unique[key] = row
    return list(unique.values())
