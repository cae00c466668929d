"""The results directory and its one owner, :class:`ResultsDir`: every path under an output directory is
worked out here, and every file in it is written here (atomically, under the locks that serialise writers).

    {output_dir}/aggregate.csv                       one row per model × task × metric × run settings
    {output_dir}/aggregate.csv.sha256                its checksum; aggregate.csv.lock serialises its writers
    {output_dir}/aggregate.csv.{time}.bak            the previous file, kept by ``mill verify --rebuild``
    {output_dir}/outputs/{model_slug}/{stem}.parquet a run's per-sample file
    {output_dir}/outputs/{model_slug}/{stem}.json    its record (:class:`~mill.core.record.RunRecord`)
    {output_dir}/outputs/{model_slug}/{stem}.scorer{N}.parquet  the per-sample file graded by older rules
    {output_dir}/.mill/runs/{digest}/                a run's committed chunks (:class:`RunDir`, mill.core.chunks)
    {output_dir}/report.html                         ``mill report``'s page

Every write is atomic (:mod:`mill.core.atomic`), and ``aggregate.csv`` updates are serialised with a file
lock, so concurrent ``mill eval`` processes sharing an output directory leave a valid file holding all their
rows. ``aggregate.csv.sha256`` records its checksum: a damaged aggregate (truncated, half copied, edited by
hand) is never read as results nor overwritten, and ``mill verify --rebuild`` regenerates it from the run
records (:mod:`mill.core.verify`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from attrs import asdict, frozen

from mill.core.atomic import (
    atomic_path,
    remove_stale_temporaries,
    write_bytes_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from mill.core.checksum import damage_of, sha256_bytes, sha256_file, sidecar_path, write_sidecar
from mill.core.errors import DamagedResultsError, ResultsError, ResultsWriteError
from mill.core.lock import results_lock
from mill.core.metrics import MetricValue
from mill.core.record import RunRecord, from_json, intact, to_json
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
    "run_rows",
]

AGGREGATE_FILE = "aggregate.csv"
OUTPUTS_DIR = "outputs"
REPORT_FILE = "report.html"
RUNS_DIR = Path(".mill") / "runs"


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


@frozen
class RunFiles:
    """The files of one stored run: its per-sample file and its record (the JSON manifest beside it)."""

    root: Path
    per_sample: Path

    @property
    def record(self) -> Path:
        return self.per_sample.with_suffix(".json")

    @property
    def output_file(self) -> str:
        """The per-sample file relative to the results directory, as ``aggregate.csv`` names it."""
        return str(self.per_sample.relative_to(self.root))

    def kept(self, scorer_version: int) -> Path:
        """Where a rescore keeps the per-sample file graded by ``scorer_version`` (written once, never replaced)."""
        return self.per_sample.with_name(f"{self.per_sample.stem}.scorer{scorer_version}.parquet")


@frozen
class StoredRecord:
    """A run's record as read back: ``record`` None when the file is not one (``problem`` says why, as a phrase
    after the file's name: "is missing"), and ``intact`` whether the file matches the hash it records of itself."""

    files: RunFiles
    record: RunRecord | None
    problem: str = ""
    intact: bool = False


@frozen
class RunDir:
    """The committed work of one run in progress, ``.mill/runs/{digest}/`` (its files: :mod:`mill.core.chunks`)."""

    path: Path

    @property
    def record_file(self) -> Path:
        return self.path / "run.json"

    def damaged(self, name: str) -> Path:
        """Where a damaged file of the run is set aside (never deleted): ``damaged/{name}``."""
        return self.path / "damaged" / name

    def member(self, name: str) -> Path:
        """A file of the run directory by name (a chunk, its checksum, ``run_info.json``)."""
        return self.path / name

    def lock_file(self, worker: int) -> Path:
        return self.path / ("lock" if worker == 0 else f"lock-r{worker}")

    def run_info_file(self, worker: int) -> Path:
        return self.path / ("run_info.json" if worker == 0 else f"run_info-r{worker}.json")

    def journal_file(self, worker: int) -> Path:
        return self.path / ("journal.jsonl" if worker == 0 else f"journal-r{worker}.jsonl")


@frozen
class ResultsDir:
    """An output directory of ``mill eval``: its paths, its locks, and the atomic writes of everything in it."""

    root: Path

    @property
    def aggregate_file(self) -> Path:
        return self.root / AGGREGATE_FILE

    @property
    def report_file(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def outputs(self) -> Path:
        return self.root / OUTPUTS_DIR

    @property
    def runs(self) -> Path:
        """Where runs in progress commit their chunks, one :class:`RunDir` per run identity."""
        return self.root / RUNS_DIR

    def ensure(self) -> ResultsDir:
        """Create the directory if needed and check it takes writes (:func:`ensure_output_dir`)."""
        ensure_output_dir(self.root)
        return self

    def check_exists(self) -> None:
        """Raises ResultsError when the directory does not exist (a typo must not pass for an empty one)."""
        if not self.root.is_dir():
            raise ResultsError(
                f"the output directory {self.root} does not exist; give the one `mill eval` wrote to with "
                "--output_dir (or MILL_OUTPUT_DIR)"
            )

    def run_dir(self, digest: str) -> RunDir:
        return RunDir(self.runs / digest)

    def run_files(self, model_identity: str, stem: str) -> RunFiles:
        """The files of a run of ``model_identity`` named ``stem`` (:func:`run_stem`)."""
        return RunFiles(self.root, self.outputs / model_slug(model_identity) / f"{stem}.parquet")

    def files_of(self, output_file: str) -> RunFiles:
        """The files of the run an ``aggregate.csv`` row names by its ``output_file``."""
        return RunFiles(self.root, self.root / output_file)

    def stored_runs(self) -> list[RunFiles]:
        """Every run with a record under ``outputs/{model_slug}/``, sorted by path."""
        return [RunFiles(self.root, p.with_suffix(".parquet")) for p in sorted(self.outputs.glob("*/*.json"))]

    def aggregate_lock(self) -> AbstractContextManager[None]:
        """The lock every writer of ``aggregate.csv`` holds (and a rebuild, from its first read to its last write)."""
        return results_lock(self.root / f"{AGGREGATE_FILE}.lock")

    def keep_aggregate_copy(self) -> Path:
        """Copy ``aggregate.csv`` (atomically) to ``aggregate.csv.{UTC time}.bak``, a name no other backup has;
        the caller holds :meth:`aggregate_lock`, so no other Mill process picks the same name meanwhile."""
        path = self.aggregate_file
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

    def write_per_sample(self, files: RunFiles, frame: pl.DataFrame) -> str:
        """Write one row per sample (``frame`` sorted by ``key``); returns the file's sha256.

        Raises:
            ResultsWriteError: the file could not be written (a full disk).
        """
        return _written(files.per_sample, lambda: write_parquet_atomic(files.per_sample, frame))

    def keep_per_sample(self, files: RunFiles, scorer_version: int) -> Path:
        """Copy the per-sample file aside as graded by ``scorer_version``, unless a copy is there already."""
        kept = files.kept(scorer_version)
        if not kept.exists():
            _written(kept, lambda: write_bytes_atomic(kept, [files.per_sample.read_bytes()]))
        return kept

    def write_record(self, files: RunFiles, record: RunRecord) -> None:
        """Write ``record`` (its hashes already sealed: :meth:`RunRecord.with_digests`) beside the per-sample file.

        Raises:
            ResultsWriteError: the file could not be written.
        """
        _written(files.record, lambda: write_json_atomic(files.record, to_json(record)))

    def read_record(self, files: RunFiles) -> StoredRecord:
        """The record of ``files``'s run, or why it cannot be read (missing, not JSON, not a record)."""
        path = files.record
        if not path.is_file():
            return StoredRecord(files, None, "is missing")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return StoredRecord(files, None, f"cannot be read ({exc})")
        if not isinstance(document, dict):
            return StoredRecord(files, None, "is not a JSON object")
        try:
            record = from_json(document)
        except ValueError as exc:
            return StoredRecord(files, None, f"is not a Mill run record ({'; '.join(str(exc).splitlines())})")
        return StoredRecord(files, record, intact=intact(document))

    def read_stored_run(self, row: Mapping[str, Any]) -> tuple[pl.DataFrame, RunRecord]:
        """The per-sample frame and record of the stored run an ``aggregate.csv`` row names.

        Raises:
            ResultsError: either file is missing or unreadable, naming the run and what to do.
        """
        files = self.files_of(row["output_file"])
        stored = self.read_record(files)
        problem = f"the manifest {files.record} {stored.problem}"
        frame = None
        try:
            frame = pl.read_parquet(files.per_sample)
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
            problem = f"{files.per_sample} cannot be read ({exc})"
        if stored.record is None or frame is None:
            raise ResultsError(
                f"{problem}; re-run the evaluation of {row['model']} on {row['task']}, or remove its rows from "
                f"{AGGREGATE_FILE}"
            )
        return frame, stored.record


_T = TypeVar("_T")


def _written(path: Path, write: Callable[[], _T]) -> _T:
    """``write()``, its OSError raised as a ResultsWriteError naming ``path``."""
    try:
        return write()
    except OSError as exc:
        raise ResultsWriteError(path, exc) from None


def records(results: ResultsDir) -> Iterator[StoredRecord]:
    """Every stored run's record (or why it cannot be read), sorted by path."""
    for files in results.stored_runs():
        yield results.read_record(files)


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


def per_sample_path(output_dir: Path, identity: str, stem: str) -> Path:
    return ResultsDir(output_dir).run_files(identity, stem).per_sample


def write_per_sample(path: Path, frame: pl.DataFrame) -> str:
    """Write one row per sample to ``path`` (a :attr:`RunFiles.per_sample`); returns the file's sha256.

    Raises:
        ResultsWriteError: the file could not be written (a full disk).
    """
    return _written(path, lambda: write_parquet_atomic(path, frame))


def read_stored_run(output_dir: Path, row: Mapping[str, Any]) -> tuple[pl.DataFrame, RunRecord]:
    """:meth:`ResultsDir.read_stored_run` of ``output_dir``."""
    return ResultsDir(output_dir).read_stored_run(row)
