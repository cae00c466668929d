"""The results store: ``aggregate.csv`` (one row per model × task × metric × run settings) kept consistent with
the run records beside it. Where each file lies, and the atomic writes and locks, are
:class:`~mill.core.results_dir.ResultsDir`'s; this module reads and rewrites the aggregate table through it.

``aggregate.csv`` updates are serialised with a file lock, so concurrent ``mill eval`` processes sharing an
output directory leave a valid file holding all their rows. ``aggregate.csv.sha256`` records its checksum: a
damaged aggregate (truncated, half copied, edited by hand) is never read as results nor overwritten, and
``mill verify --rebuild`` regenerates it from the run records (:mod:`mill.core.verify`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import polars as pl
from attrs import asdict

from mill.core.atomic import atomic_path, remove_stale_temporaries
from mill.core.checksum import damage_of, sha256_bytes, sha256_file, sidecar_path, write_sidecar
from mill.core.errors import DamagedResultsError, ResultsWriteError
from mill.core.metrics import MetricValue
from mill.core.results_dir import (
    AGGREGATE_FILE,
    ResultsDir,
    RunDir,
    RunFiles,
    StoredRecord,
    ensure_output_dir,
    model_slug,
    records,
    run_stem,
    settings_digest,
)
from mill.core.rows import (
    AGGREGATE_SCHEMA,
    LATER_COLUMNS,
    UPSERT_KEY,
    AggregateRow,
    RunFacts,
    run_rows,
)

__all__ = [
    "AGGREGATE_FILE",
    "AGGREGATE_SCHEMA",
    "LATER_COLUMNS",
    "UPSERT_KEY",
    "AggregateRow",
    "ResultsDir",
    "RunDir",
    "RunFacts",
    "RunFiles",
    "StoredRecord",
    "ensure_output_dir",
    "model_slug",
    "read_aggregate",
    "rebuild_aggregate",
    "records",
    "run_rows",
    "run_stem",
    "settings_digest",
    "update_run_metrics",
    "upsert_aggregate",
]


def read_aggregate(output_dir: Path) -> pl.DataFrame:
    """Every row of ``aggregate.csv`` (an empty frame with the schema when there is none).

    Raises:
        DamagedResultsError: the file does not match its recorded checksum, or cannot be parsed.
    """
    try:
        return _read_checked(output_dir)
    except DamagedResultsError:
        # A writer may have been between its renames: under the lock the file and its checksum agree.
        with ResultsDir(output_dir).aggregate_lock():
            return _read_checked(output_dir)


def _read_checked(output_dir: Path) -> pl.DataFrame:
    path = ResultsDir(output_dir).aggregate_file
    if not path.exists():
        return pl.DataFrame(schema=AGGREGATE_SCHEMA)
    # A file without a checksum was written before Mill recorded one: trusted if it parses.
    problem = damage_of(path) if sidecar_path(path).exists() else None
    frame = None
    if problem is None:
        try:
            frame = pl.read_csv(path, schema_overrides=AGGREGATE_SCHEMA)
        except (pl.exceptions.PolarsError, OSError) as exc:
            problem = f"cannot be read as CSV: {str(exc).splitlines()[0]}"
    if frame is not None:
        missing = [c for c in AGGREGATE_SCHEMA if c not in frame.columns and c not in LATER_COLUMNS]
        if missing:
            problem = f"not a Mill aggregate file: missing columns {', '.join(missing)}"
        else:
            absent = [column for column in LATER_COLUMNS if column not in frame.columns]
            frame = frame.with_columns(pl.lit(None, dtype=AGGREGATE_SCHEMA[c]).alias(c) for c in absent)
    if problem is not None or frame is None:
        raise DamagedResultsError(
            f"{path} is damaged ({problem}); it is left as it is: run `mill verify --rebuild --output_dir "
            f"{output_dir}` to regenerate it from the run manifests"
        )
    return frame.select(list(AGGREGATE_SCHEMA))


def _key(frame: pl.DataFrame) -> pl.Series:
    return frame.select(
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in UPSERT_KEY], separator="\x1f")
    ).to_series()


def upsert_aggregate(output_dir: Path, rows: Sequence[AggregateRow]) -> Path:
    """Insert ``rows`` into ``aggregate.csv``, replacing rows with the same upsert key.

    Serialised across processes with a lock file beside the CSV; the CSV is replaced atomically.

    Raises:
        DamagedResultsError: the existing file is damaged (it is left untouched).
        ResultsWriteError: the file or its checksum could not be written (a full disk).
    """
    new = pl.DataFrame([asdict(row) for row in rows], schema=AGGREGATE_SCHEMA)
    return _rewrite_aggregate(
        output_dir, lambda existing: pl.concat([existing.filter(~_key(existing).is_in(_key(new).implode())), new])
    )


def update_run_metrics(
    output_dir: Path,
    *,
    output_file: str,
    run_id: str,
    variant: str,
    metrics: Mapping[str, MetricValue],
    headline_source: str,
    scorer_version: int | None,
) -> None:
    """Give one stored run's rows in ``aggregate.csv`` new values, in place: a run graded again (``mill rescore``).

    The run's rows are those with its ``output_file`` and ``run_id``. A row of ``variant`` takes its metric's
    value from ``metrics``; the rollup row (as :func:`run_rows` writes it) takes ``metrics[headline_source]``.
    ``performance``, ``stderr`` and ``scorer_version`` change; no row is added or removed, and every other
    column and the row order stay (a file without the run's rows keeps its values). Serialised and
    atomic as :func:`upsert_aggregate`.
    """
    of_run = (pl.col("output_file") == output_file) & (pl.col("run_id") == run_id)
    own = (pl.col("task") == variant) & pl.col("metric").is_in(list(metrics))
    headline = metrics[headline_source]

    def new(column: str, values: Mapping[str, float | None], rollup: float | None) -> pl.Expr:
        by_metric = pl.col("metric").replace_strict(values, default=None, return_dtype=pl.Float64)
        value = pl.when(own).then(by_metric).otherwise(pl.lit(rollup, dtype=pl.Float64))
        return pl.when(of_run).then(value).otherwise(pl.col(column)).alias(column)

    def change(existing: pl.DataFrame) -> pl.DataFrame:
        return existing.with_columns(
            new("performance", {name: m.value for name, m in metrics.items()}, headline.value),
            new("stderr", {name: m.stderr for name, m in metrics.items()}, headline.stderr),
            pl.when(of_run)
            .then(pl.lit(scorer_version, dtype=pl.Int64))
            .otherwise(pl.col("scorer_version"))
            .alias("scorer_version"),
        )

    if ResultsDir(output_dir).aggregate_file.exists():
        _rewrite_aggregate(output_dir, change)


def _rewrite_aggregate(output_dir: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> Path:
    """Replace ``aggregate.csv`` by ``change`` of its rows, under the lock that serialises its writers."""
    ensure_output_dir(output_dir)
    with ResultsDir(output_dir).aggregate_lock():
        # Under the lock no other writer is mid-update, so a temporary file left here belongs to a
        # process killed while updating.
        remove_stale_temporaries(output_dir, AGGREGATE_FILE)
        return _replace_aggregate(output_dir, change(_read_checked(output_dir)).select(list(AGGREGATE_SCHEMA)))


def rebuild_aggregate(
    output_dir: Path, rows_from: Callable[[pl.DataFrame | None], Sequence[AggregateRow]]
) -> tuple[Path, Path | None]:
    """Replace ``aggregate.csv`` by ``rows_from(previous rows)`` (None when the file is damaged or absent),
    keeping a copy of the previous file, damaged or not, as ``aggregate.csv.{UTC time}.bak``; returns the new
    file and the copy (None if there was no file).

    The lock is held from ``rows_from``'s first read to the last write, so an evaluation finishing meanwhile
    adds its rows after the rebuild, never before it (where they would be dropped). The previous file is
    copied, never moved: whatever signal arrives, ``aggregate.csv`` is the old file or the new one, and a
    backup never takes another's name.

    Raises:
        ResultsWriteError: a file could not be written.
    """
    path = ResultsDir(output_dir).aggregate_file
    ensure_output_dir(output_dir)
    with ResultsDir(output_dir).aggregate_lock():
        remove_stale_temporaries(output_dir, AGGREGATE_FILE)
        try:
            previous: pl.DataFrame | None = _read_checked(output_dir)
        except DamagedResultsError:
            previous = None
        frame = pl.DataFrame([asdict(row) for row in rows_from(previous)], schema=AGGREGATE_SCHEMA)
        kept = ResultsDir(output_dir).keep_aggregate_copy() if path.exists() else None
        return _replace_aggregate(output_dir, frame), kept


def _replace_aggregate(output_dir: Path, frame: pl.DataFrame) -> Path:
    """Write ``frame`` as ``aggregate.csv`` and its checksum; the caller holds the lock.

    The sidecar lists the old and the new checksum while the CSV is renamed, then the new one alone, so
    that a process killed at any point leaves a file that checks.
    """
    path = ResultsDir(output_dir).aggregate_file
    data = frame.write_csv().encode()
    new = sha256_bytes(data)
    writing = sidecar_path(path)
    try:
        old = [sha256_file(path)] if path.exists() else []
        write_sidecar(path, *old, new)
        writing = path
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        writing = sidecar_path(path)
        write_sidecar(path, new)
    except OSError as exc:
        raise ResultsWriteError(writing, exc) from None
    return path
