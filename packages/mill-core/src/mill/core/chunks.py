"""Committed work of a run: raw per-sample results in chunk files, so an interrupted run loses minutes.

A run's directory is keyed by its :class:`~mill.core.run_identity.RunIdentity` digest::

    {output_dir}/.mill/runs/{digest}/run.json            identity, run id, first start time
    {output_dir}/.mill/runs/{digest}/chunk-00000.parquet raw results of some samples
    {output_dir}/.mill/runs/{digest}/chunk-00000.parquet.sha256  its checksum, written once it is in place
    {output_dir}/.mill/runs/{digest}/chunk-r1-00000.parquet  the same, committed by rank 1 of a launch
    {output_dir}/.mill/runs/{digest}/lock                held while a process works on the run (lock-r1 ...)
    {output_dir}/.mill/runs/{digest}/damaged/            chunks found damaged, set aside (never deleted)
    {output_dir}/.mill/runs/{digest}/run_info.json       the backend's run_info at the last commit (run_info-r1 ...)
    {output_dir}/.mill/runs/{digest}/journal.jsonl       answered requests of a served model, as they arrive
                                                          (journal-r1.jsonl ...; :class:`JournallingBackend`)

Chunks hold what the backend answered (zero-shot: top-k classes; MCQ: prompt and response), not
scores: the run is scored once over the union of its chunks, so metrics never depend on where a
run was cut. Each chunk is written atomically (:mod:`mill.core.atomic`) and its checksum recorded
after it (:mod:`mill.core.checksum`), so a chunk is committed once both exist, and a sample is either
in exactly one committed chunk or still to be computed. A chunk damaged later (a partial copy of the
directory, a filesystem fault) is found when the run is opened, moved into ``damaged/`` with a
warning, and its samples are computed again. A sample skipped as undecodable is committed too, with
its reason in ``skipped``, so a resumed run neither retries it nor forgets to count it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
from filelock import Timeout

from mill.core.atomic import remove_stale_temporaries, write_json_atomic, write_parquet_atomic
from mill.core.checksum import SIDECAR_SUFFIX, damage_of, recorded_digests, sidecar_path, write_sidecar
from mill.core.errors import MillWarning, ResultsError, ResultsWriteError
from mill.core.lock import results_lock
from mill.core.results_dir import RUNS_DIR, ResultsDir, RunDir, ensure_output_dir
from mill.core.run_identity import RunIdentity

__all__ = ["RUNS_DIR", "ChunkStore", "MemoryChunkStore", "committed_samples", "journal_path"]

RUN_FILE = "run.json"
_CHUNK = re.compile(r"chunk-(?:r(\d+)-)?(\d+)\.parquet")
_RUN_INFO = re.compile(r"run_info(?:-r\d+)?\.json")
_JOURNAL = re.compile(r"journal(?:-r\d+)?\.jsonl")


class ChunkStore:
    """The committed chunks of one run, opened with :meth:`open` (which holds the run's lock)."""

    def __init__(self, path: Path, schema: Mapping[str, Any], run: Mapping[str, Any], worker: int = 0) -> None:
        self.path = path
        self.run_dir = RunDir(path)
        self.schema = dict(schema)
        self._run = dict(run)
        self._worker = worker

    @property
    def run_id(self) -> str:
        """The id of the run, kept from its first start so a resumed run is the same run."""
        return str(self._run["run_id"])

    @property
    def started_at(self) -> str:
        """When the run first started (ISO 8601, UTC)."""
        return str(self._run["started_at"])

    @classmethod
    @contextmanager
    def open(
        cls,
        output_dir: Path,
        identity: RunIdentity,
        *,
        schema: Mapping[str, Any],
        overwrite: bool = False,
        worker: int = 0,
    ) -> Iterator[ChunkStore]:
        """The store of ``identity``'s run under ``output_dir``, locked against other processes.

        With ``overwrite`` (or when the directory holds chunks of unknown provenance) committed
        chunks are deleted first. Temporary files left by a process killed mid-write are removed.
        ``worker`` is the rank of a distributed launch: each rank commits chunks of its own (and
        holds its own lock), and every rank reads all of them, so a restart reuses the work of
        any number of ranks. Rank 0 must open the store before the others (it prepares it).

        Raises:
            ResultsError: another process holds the run, the directory cannot be created, or its
                ``run.json`` records a different identity.
        """
        run_dir = ResultsDir(output_dir).run_dir(identity.digest())
        path = ensure_output_dir(run_dir.path)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(results_lock(run_dir.lock_file(worker), timeout=0))
            except Timeout:
                raise ResultsError(
                    f"another mill eval is running this same run in {output_dir} (lock {run_dir.lock_file(0)} is "
                    "held); "
                    "wait for it to finish, or use another --output_dir"
                ) from None
            if worker == 0:
                record = _prepare(path, identity, overwrite=overwrite)
                set_aside_damaged(path)
            else:
                record = _record(path, identity)
            yield cls(path, schema, record, worker)

    def chunk_files(self, *, own: bool = False) -> list[Path]:
        """Committed chunk files of every rank (or, with ``own``, of this one), in commit order."""
        found = [(place, p) for p in self.path.iterdir() if (place := _chunk_place(p)) is not None]
        return [p for place, p in sorted(found) if not own or place[0] == self._worker]

    def done_keys(self, *, skipped: bool) -> set[str]:
        """Keys of every committed sample: evaluated ones, and with ``skipped`` those committed as
        skipped too (a run that fails on bad samples computes those again, and so fails on them)."""
        files = self.chunk_files()
        if not files:
            return set()
        frame = pl.read_parquet(files, columns=["key", "skipped"])
        if not skipped:
            frame = frame.filter(pl.col("skipped").is_null())
        return set(frame["key"].to_list())

    def commit(self, frame: pl.DataFrame) -> Path:
        """Write ``frame`` (raw columns: the kind's raw schema, missing columns null) as the next chunk,
        atomically, then its checksum.

        Raises:
            ResultsWriteError: either file could not be written (a full disk); the chunk is then not
                committed, and its samples are computed by the next run.
        """
        files = self.chunk_files(own=True)
        number = _chunk_place(files[-1])[1] + 1 if files else 0  # type: ignore[index]
        prefix = "chunk-" if self._worker == 0 else f"chunk-r{self._worker}-"
        target = self.run_dir.member(f"{prefix}{number:05d}.parquet")
        try:
            digest = write_parquet_atomic(target, conform(frame, self.schema))
        except OSError as exc:
            raise ResultsWriteError(target, exc) from None
        try:
            write_sidecar(target, digest)
        except BaseException as exc:
            # A chunk without its checksum would read as damaged next time: take it back, so its
            # samples are simply computed again (after a full disk, Ctrl-C or SIGTERM right here).
            # Ctrl-C just after the sidecar's rename finds the commit complete, and keeps it.
            if digest not in (recorded_digests(target) or []):
                target.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise ResultsWriteError(sidecar_path(target), exc) from None
            raise
        return target

    def record_run_info(self, info: Mapping[str, Any]) -> None:
        """Keep the backend's ``run_info`` as of the last commit, for :meth:`recorded_run_info` on resume.

        Raises:
            ResultsWriteError: it could not be written (a full disk).
        """
        try:
            write_json_atomic(self._run_info_file(), dict(info))
        except OSError as exc:
            raise ResultsWriteError(self._run_info_file(), exc) from None

    def recorded_run_info(self) -> dict[str, Any]:
        """What :meth:`record_run_info` last kept for this rank; empty when nothing (readable) was."""
        try:
            info = json.loads(self._run_info_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # only a head start (the batch size a run fell back to): without it the run still runs
        return info if isinstance(info, dict) else {}

    def _run_info_file(self) -> Path:
        return self.run_dir.run_info_file(self._worker)

    def journal_file(self, worker: int) -> Path:
        """The request journal of rank ``worker`` (see :class:`~mill.core.backend.JournallingBackend`)."""
        return self.run_dir.journal_file(worker)

    def read(self) -> pl.DataFrame:
        """Every committed row, one per key (an evaluated row wins over a skipped one), in commit order."""
        files = self.chunk_files()
        if not files:
            return pl.DataFrame(schema=self.schema)
        return one_per_key(pl.read_parquet(files))


def journal_path(run_dir: Path, worker: int = 0) -> Path:
    """The request journal of rank ``worker`` in the run directory ``run_dir`` (see
    :class:`~mill.core.backend.JournallingBackend`); removed with the run's chunks when the run starts afresh."""
    return RunDir(run_dir).journal_file(worker)


def conform(frame: pl.DataFrame, schema: Mapping[str, Any]) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns, in order and type (missing ones null: a skipped sample has
    no answer columns)."""
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in frame.columns]
    return frame.with_columns(missing).select(list(schema)).cast(pl.Schema(dict(schema)))


def one_per_key(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per key, in commit order: a sample evaluated after it was once skipped keeps its answer."""
    ordered = frame.sort(pl.col("skipped").is_not_null(), maintain_order=True)
    return ordered.unique("key", keep="first", maintain_order=True)


def _chunk_place(path: Path) -> tuple[int, int] | None:
    """(rank, number) of a chunk file, None for any other file."""
    match = _CHUNK.fullmatch(path.name)
    return (int(match.group(1) or 0), int(match.group(2))) if match else None


def _record(path: Path, identity: RunIdentity) -> dict[str, Any]:
    """The run record rank 0 prepared, checked against this rank's identity."""
    record_file = RunDir(path).record_file
    if not record_file.exists():
        raise ResultsError(f"{record_file} is missing: rank 0 of the launch must open the run first")
    record = _read_record(record_file)
    if record is None:
        raise ResultsError(f"{record_file} is damaged; run the launch again (rank 0 sets it aside and starts afresh)")
    if record.get("identity") != identity.as_dict():
        raise ResultsError(
            f"{record_file}: this rank's run identity differs from rank 0's (another model revision, library "
            "version or data?); every rank of a launch must see the same model, code and data"
        )
    return record


def _prepare(path: Path, identity: RunIdentity, *, overwrite: bool) -> dict[str, Any]:
    """Clean ``path`` for use by this process and return its run record (``run.json``)."""
    remove_stale_temporaries(path)
    record_file = RunDir(path).record_file
    record: dict[str, Any] | None = None
    damaged = False
    if record_file.exists() and not overwrite:
        record = _read_record(record_file)
        if record is None:
            # The directory is named by the identity's digest and each chunk checks against its checksum, so
            # the chunks stay; only the record (run id, start time) is new.
            damaged = True
            destination = _free_name(RunDir(path).damaged(RUN_FILE))
            destination.parent.mkdir(exist_ok=True)
            record_file.rename(destination)
            warnings.warn(
                f"{record_file} is damaged (not the JSON Mill wrote); moved to {destination}; the run goes on "
                "under a new run id, keeping the committed samples that check",
                MillWarning,
                stacklevel=3,
            )
        elif record.get("identity") != identity.as_dict():
            raise ResultsError(
                f"{record_file} records another run than this one (its digest collides); delete {path} and run again"
            )
    if record is None:
        if not overwrite and not damaged:
            _say_if_content_changed(path, identity)
        for leftover in [] if damaged else path.iterdir():
            name = leftover.name.removesuffix(SIDECAR_SUFFIX)
            stem = leftover.with_name(name)
            if (
                _chunk_place(stem) is not None
                or leftover.name == RUN_FILE
                or _RUN_INFO.fullmatch(leftover.name)
                or _JOURNAL.fullmatch(leftover.name)
            ):
                leftover.unlink()
        record = {
            "identity": identity.as_dict(),
            "run_id": uuid.uuid4().hex[:12],
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        try:
            write_json_atomic(record_file, record)
        except OSError as exc:
            raise ResultsWriteError(record_file, exc) from None
    return record


def _say_if_content_changed(path: Path, identity: RunIdentity) -> None:
    """Warn when another run directory beside ``path`` holds this same run but for the content of some shards:
    the new run starts afresh, and the user should know that it is because the data changed."""
    mine = identity.as_dict()
    names = [shard[:2] for shard in mine["shards"]]
    for other in sorted(path.parent.glob(f"*/{RUN_FILE}")):
        if other.parent == path:
            continue
        try:
            theirs = json.loads(other.read_text(encoding="utf-8")).get("identity")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(theirs, dict) or {**theirs, "shards": None} != {**mine, "shards": None}:
            continue
        shards = theirs.get("shards")
        if not isinstance(shards, list) or [list(shard[:2]) for shard in shards] != [list(n) for n in names]:
            continue
        changed = [new[0] for old, new in zip(shards, mine["shards"], strict=True) if list(old) != list(new)]
        warnings.warn(
            f"the content of shard(s) {', '.join(changed)} changed since the run committed in {other.parent} "
            "(same names and sizes, another sha256): this run starts afresh rather than resume samples computed "
            "on the old content",
            MillWarning,
            stacklevel=4,
        )
        return


def _read_record(record_file: Path) -> dict[str, Any] | None:
    """The run record in ``record_file``; None when it is not what Mill writes (truncated, edited, not UTF-8).

    Raises:
        ResultsError: it cannot be read at all (permissions), naming it.
    """
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    except OSError as exc:
        raise ResultsError(f"cannot read {record_file} ({exc.strerror})") from None
    if not isinstance(record, dict) or not isinstance(record.get("identity"), dict) or "run_id" not in record:
        return None
    return record


class MemoryChunkStore:
    """The chunks of a run that keeps nothing on disk (``output_dir=None``: a training loop's evaluation).

    Same interface as :class:`ChunkStore`; nothing is locked, so concurrent evaluations never contend.
    """

    path: Path | None = None

    def journal_file(self, worker: int) -> None:
        """No journal: nothing is kept on disk."""
        del worker

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = dict(schema)
        self._frames: list[pl.DataFrame] = []
        self._run_info: dict[str, Any] = {}
        self.run_id = uuid.uuid4().hex[:12]
        self.started_at = dt.datetime.now(dt.timezone.utc).isoformat()

    def done_keys(self, *, skipped: bool) -> set[str]:
        frame = self.read()
        if not skipped:
            frame = frame.filter(pl.col("skipped").is_null())
        return set(frame["key"].to_list())

    def commit(self, frame: pl.DataFrame) -> None:
        self._frames.append(conform(frame, self.schema))

    def read(self) -> pl.DataFrame:
        return one_per_key(pl.concat(self._frames)) if self._frames else pl.DataFrame(schema=self.schema)

    def record_run_info(self, info: Mapping[str, Any]) -> None:
        self._run_info = dict(info)

    def recorded_run_info(self) -> dict[str, Any]:
        return dict(self._run_info)


def set_aside_damaged(path: Path) -> list[Path]:
    """Move every damaged chunk of the run directory ``path`` (no checksum, a checksum that differs, not
    readable as parquet) with its sidecar into ``path/damaged/``, warning with its name and what is wrong;
    returns where they went. Its samples are then uncommitted, so the run computes them again.

    Only call this while holding the run's lock (rank 0, before the other ranks open the run).
    """
    moved = []
    for chunk in sorted(p for p in path.iterdir() if _chunk_place(p) is not None):
        problem = damage_of(chunk) or _unreadable(chunk)
        if problem is None:
            continue
        destination = _free_name(RunDir(path).damaged(chunk.name))
        destination.parent.mkdir(exist_ok=True)
        chunk.rename(destination)
        if sidecar_path(chunk).exists():
            sidecar_path(chunk).rename(sidecar_path(destination))
        warnings.warn(
            f"{chunk} is damaged ({problem}); moved to {destination}, its samples are computed again",
            MillWarning,
            stacklevel=2,
        )
        moved.append(destination)
    return moved


def _unreadable(chunk: Path) -> str | None:
    try:
        pl.read_parquet(chunk, columns=["key", "skipped"])
    except (pl.exceptions.PolarsError, OSError) as exc:
        return f"not readable as parquet: {str(exc).splitlines()[0]}"
    return None


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``... whichever does not exist yet (a chunk number damaged twice)."""
    candidate, n = path, 0
    while candidate.exists() or sidecar_path(candidate).exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def committed_samples(path: Path) -> int:
    """How many samples the committed chunks of the run directory ``path`` hold (for messages: 0 when
    they cannot be read)."""
    files = [p for p in path.iterdir() if _chunk_place(p) is not None] if path.is_dir() else []
    try:
        return len(pl.read_parquet(files, columns=["key"]).unique("key")) if files else 0
    except (pl.exceptions.PolarsError, OSError):
        return 0
