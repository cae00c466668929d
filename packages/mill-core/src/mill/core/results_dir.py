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
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from attrs import frozen

from mill.core.atomic import write_bytes_atomic, write_json_atomic, write_parquet_atomic
from mill.core.errors import ResultsError, ResultsWriteError
from mill.core.lock import results_lock
from mill.core.record import RunRecord, from_json, intact, to_json

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
