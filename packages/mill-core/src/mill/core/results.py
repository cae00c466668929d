"""The results store: ``aggregate.csv`` (one row per model × task × metric × run settings), and per
run a per-sample parquet file with its JSON manifest under ``outputs/{model_slug}/``.

Every write is atomic (:mod:`mill.core.atomic`), and ``aggregate.csv`` updates are
serialised with a file lock, so concurrent ``mill eval`` processes sharing an output directory
leave a valid file holding all their rows. ``aggregate.csv.sha256`` records its checksum: a damaged
aggregate (truncated, half copied, edited by hand) is never read as results nor overwritten, and
``mill verify --rebuild`` regenerates it from the run manifests (:mod:`mill.core.verify`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import polars as pl
from attrs import asdict, frozen

from mill.core.atomic import atomic_path, remove_stale_temporaries, write_bytes_atomic, write_parquet_atomic
from mill.core.checksum import damage_of, sha256_bytes, sha256_file, sidecar_path, write_sidecar
from mill.core.errors import DamagedResultsError, ResultsError, ResultsWriteError
from mill.core.lock import results_lock
from mill.core.metrics import MetricValue

AGGREGATE_FILE = "aggregate.csv"

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


def model_slug(identity: str) -> str:
    """A directory name for a model identity: ``/`` becomes ``__``, other unsafe characters ``-``."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", identity.replace("/", "__"))


def settings_digest(settings: Mapping[str, object]) -> str:
    """A short readable digest of output-changing arguments: ``dtype=bfloat16,max_new_tokens=32``."""
    return ",".join(f"{key}={settings[key]}" for key in sorted(settings))


def run_stem(task: str, *, seed: int, default_seed: int, limit: int | None, settings: str, default: bool) -> str:
    """File stem of a run's outputs: ``{task}_0shot`` plus a suffix naming whatever is non-default,
    so that runs with another seed, limit or settings never overwrite each other."""
    parts = [f"{task}_0shot"]
    if seed != default_seed:
        parts.append(f"seed{seed}")
    if limit is not None:
        parts.append(f"limit{limit}")
    if not default:
        parts.append(re.sub(r"[^A-Za-z0-9.=+-]", "-", settings.replace("=", "-")))
    return "_".join(parts)


def ensure_output_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed and return it.

    Raises:
        ResultsError: it cannot be created (a parent is a file, no permission, read-only disk),
            naming the directory and how to choose another.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(
            f"cannot create the output directory {path} ({exc.strerror}); "
            "choose another with --output_dir or MILL_OUTPUT_DIR"
        ) from None
    try:  # an existing directory may still refuse writes (read-only, someone else's): say so before any work
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ResultsError(
            f"cannot write in the output directory {path} ({exc.strerror}); "
            "fix its permissions, or choose another with --output_dir or MILL_OUTPUT_DIR"
        ) from None
    return path


def read_aggregate(output_dir: Path) -> pl.DataFrame:
    """Every row of ``aggregate.csv`` (an empty frame with the schema when there is none).

    Raises:
        DamagedResultsError: the file does not match its recorded checksum, or cannot be parsed.
    """
    try:
        return _read_checked(output_dir)
    except DamagedResultsError:
        # A writer may have been between its renames: under the lock the file and its checksum agree.
        with _aggregate_lock(output_dir):
            return _read_checked(output_dir)


def _aggregate_lock(output_dir: Path) -> AbstractContextManager[None]:
    return results_lock(output_dir / f"{AGGREGATE_FILE}.lock")


def _read_checked(output_dir: Path) -> pl.DataFrame:
    path = output_dir / AGGREGATE_FILE
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

    if (output_dir / AGGREGATE_FILE).exists():
        _rewrite_aggregate(output_dir, change)


def _rewrite_aggregate(output_dir: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> Path:
    """Replace ``aggregate.csv`` by ``change`` of its rows, under the lock that serialises its writers."""
    ensure_output_dir(output_dir)
    with _aggregate_lock(output_dir):
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
    path = output_dir / AGGREGATE_FILE
    ensure_output_dir(output_dir)
    with _aggregate_lock(output_dir):
        remove_stale_temporaries(output_dir, AGGREGATE_FILE)
        try:
            previous: pl.DataFrame | None = _read_checked(output_dir)
        except DamagedResultsError:
            previous = None
        frame = pl.DataFrame([asdict(row) for row in rows_from(previous)], schema=AGGREGATE_SCHEMA)
        kept = _keep_copy(path) if path.exists() else None
        return _replace_aggregate(output_dir, frame), kept


def _keep_copy(path: Path) -> Path:
    """Copy ``path`` (atomically) to ``{path}.{UTC time}.bak``, a name no other backup has; the caller holds
    the lock, so no other Mill process picks the same name meanwhile."""
    stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}"
    kept = path.with_name(f"{path.name}.{stamp}.bak")
    n = 0
    while kept.exists() or kept.is_symlink():
        n += 1
        kept = path.with_name(f"{path.name}.{stamp}.{n}.bak")
    try:
        write_bytes_atomic(kept, [path.read_bytes()])
    except OSError as exc:
        raise ResultsWriteError(kept, exc) from None
    return kept


def _replace_aggregate(output_dir: Path, frame: pl.DataFrame) -> Path:
    """Write ``frame`` as ``aggregate.csv`` and its checksum; the caller holds the lock.

    The sidecar lists the old and the new checksum while the CSV is renamed, then the new one alone, so
    that a process killed at any point leaves a file that checks.
    """
    path = output_dir / AGGREGATE_FILE
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


def per_sample_path(output_dir: Path, identity: str, stem: str) -> Path:
    return output_dir / "outputs" / model_slug(identity) / f"{stem}.parquet"


def write_per_sample(path: Path, frame: pl.DataFrame) -> str:
    """Write one row per sample; ``frame`` is sorted by ``key`` (the order never depends on batching or
    workers). Returns the file's sha256, which the run's manifest records.

    Raises:
        ResultsWriteError: the file could not be written (a full disk).
    """
    try:
        return write_parquet_atomic(path, frame)
    except OSError as exc:
        raise ResultsWriteError(path, exc) from None


def read_stored_run(output_dir: Path, row: Mapping[str, Any]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The per-sample frame and manifest of the stored run an ``aggregate.csv`` row names (its ``output_file``).

    Raises:
        ResultsError: either file is missing or unreadable, naming the run and what to do.
    """
    parquet = output_dir / row["output_file"]
    manifest_path = parquet.with_suffix(".json")
    try:
        frame = pl.read_parquet(parquet)
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise ResultsError(
            f"{parquet} or its manifest {manifest_path.name} cannot be read ({exc}); re-run the evaluation of "
            f"{row['model']} on {row['task']}, or remove its rows from aggregate.csv"
        ) from None
    return frame, manifest
