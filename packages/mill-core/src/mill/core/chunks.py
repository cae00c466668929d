"""Committed work of a run: raw per-sample results in chunk files, so an interrupted run loses minutes.

A run's directory is keyed by its :class:`~mill.core.run_identity.RunIdentity` digest::

    {output_dir}/.mill/runs/{digest}/run.json            identity, run id, first start time
    {output_dir}/.mill/runs/{digest}/chunk-00000.parquet raw results of some samples
    {output_dir}/.mill/runs/{digest}/chunk-r1-00000.parquet  the same, committed by rank 1 of a launch
    {output_dir}/.mill/runs/{digest}/lock                held while a process works on the run (lock-r1 ...)
    {output_dir}/.mill/runs/{digest}/run_info.json       the backend's run_info at the last commit (run_info-r1 ...)

Chunks hold what the backend answered (zero-shot: top-k classes; MCQ: prompt and response), not
scores: the run is scored once over the union of its chunks, so metrics never depend on where a
run was cut. Each chunk is written atomically (:mod:`mill.core.atomic`), so a chunk file
that exists is whole, and a sample is either in exactly one chunk or still to be computed. A
sample skipped as undecodable is committed too, with its reason in ``skipped``, so a resumed run
neither retries it nor forgets to count it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
from filelock import Timeout

from mill.core.atomic import remove_stale_temporaries, write_json_atomic, write_parquet_atomic
from mill.core.errors import ResultsError
from mill.core.lock import file_lock
from mill.core.results import ensure_output_dir
from mill.core.run_identity import RunIdentity

RUNS_DIR = Path(".mill") / "runs"
RUN_FILE = "run.json"
_CHUNK = re.compile(r"chunk-(?:r(\d+)-)?(\d+)\.parquet")
_RUN_INFO = re.compile(r"run_info(?:-r\d+)?\.json")


class ChunkStore:
    """The committed chunks of one run, opened with :meth:`open` (which holds the run's lock)."""

    def __init__(self, path: Path, schema: Mapping[str, Any], run: Mapping[str, Any], worker: int = 0) -> None:
        self.path = path
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
        path = ensure_output_dir(output_dir / RUNS_DIR / identity.digest())
        lock = file_lock(path / ("lock" if worker == 0 else f"lock-r{worker}"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ResultsError(
                f"another mill eval is running this same run in {output_dir} (lock {path / 'lock'} is held); "
                "wait for it to finish, or use another --output_dir"
            ) from None
        try:
            record = _prepare(path, identity, overwrite=overwrite) if worker == 0 else _record(path, identity)
            yield cls(path, schema, record, worker)
        finally:
            lock.release()

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
        """Write ``frame`` (raw columns: the kind's raw schema, missing columns null) as the next chunk, atomically."""
        files = self.chunk_files(own=True)
        number = _chunk_place(files[-1])[1] + 1 if files else 0  # type: ignore[index]
        prefix = "chunk-" if self._worker == 0 else f"chunk-r{self._worker}-"
        target = self.path / f"{prefix}{number:05d}.parquet"
        missing = [pl.lit(None, dtype).alias(name) for name, dtype in self.schema.items() if name not in frame.columns]
        write_parquet_atomic(target, frame.with_columns(missing).select(list(self.schema)).cast(pl.Schema(self.schema)))
        return target

    def record_run_info(self, info: Mapping[str, Any]) -> None:
        """Keep the backend's ``run_info`` as of the last commit, for :meth:`recorded_run_info` on resume."""
        write_json_atomic(self._run_info_file(), dict(info))

    def recorded_run_info(self) -> dict[str, Any]:
        """What :meth:`record_run_info` last kept for this rank; empty when nothing (readable) was."""
        try:
            info = json.loads(self._run_info_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # only a head start (the batch size a run fell back to): without it the run still runs
        return info if isinstance(info, dict) else {}

    def _run_info_file(self) -> Path:
        return self.path / ("run_info.json" if self._worker == 0 else f"run_info-r{self._worker}.json")

    def read(self) -> pl.DataFrame:
        """Every committed row, one per key (an evaluated row wins over a skipped one), in commit order."""
        files = self.chunk_files()
        if not files:
            return pl.DataFrame(schema=self.schema)
        frame = pl.read_parquet(files).sort(pl.col("skipped").is_not_null(), maintain_order=True)
        return frame.unique("key", keep="first", maintain_order=True)


def _chunk_place(path: Path) -> tuple[int, int] | None:
    """(rank, number) of a chunk file, None for any other file."""
    match = _CHUNK.fullmatch(path.name)
    return (int(match.group(1) or 0), int(match.group(2))) if match else None


def _record(path: Path, identity: RunIdentity) -> dict[str, Any]:
    """The run record rank 0 prepared, checked against this rank's identity."""
    record_file = path / RUN_FILE
    try:
        record: dict[str, Any] = json.loads(record_file.read_text(encoding="utf-8"))
    except OSError:
        raise ResultsError(f"{record_file} is missing: rank 0 of the launch must open the run first") from None
    if record.get("identity") != identity.as_dict():
        raise ResultsError(
            f"{record_file}: this rank's run identity differs from rank 0's (another model revision, library "
            "version or data?); every rank of a launch must see the same model, code and data"
        )
    return record


def _prepare(path: Path, identity: RunIdentity, *, overwrite: bool) -> dict[str, Any]:
    """Clean ``path`` for use by this process and return its run record (``run.json``)."""
    remove_stale_temporaries(path)
    record_file = path / RUN_FILE
    record: dict[str, Any] | None = None
    if record_file.exists() and not overwrite:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if record.get("identity") != identity.as_dict():
            raise ResultsError(
                f"{record_file} records another run than this one (its digest collides); delete {path} and run again"
            )
    if record is None:
        for leftover in path.iterdir():
            if _chunk_place(leftover) is not None or leftover.name == RUN_FILE or _RUN_INFO.fullmatch(leftover.name):
                leftover.unlink()
        record = {
            "identity": identity.as_dict(),
            "run_id": uuid.uuid4().hex[:12],
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        write_json_atomic(record_file, record)
    return record
