"""The one way Mill writes a file: beside the target, fsynced, given the user's permissions, renamed into place.

A reader (another process, a resumed run) therefore sees the old file or the whole new one, never a part.
Temporary files are named ``.{target}.{random}.tmp``, so a directory's leftovers from a killed process
are recognisable (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

TEMPORARY_SUFFIX = ".tmp"


def file_mode() -> int:
    """The mode a new regular file gets under the process's umask (``0o666 & ~umask``).

    ``tempfile.mkstemp`` creates files readable by their owner alone; shared results and cache
    directories on a cluster need what the user's umask says, as any other tool would create.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write; on success fsync it, give it the umask's
    mode and rename it over ``target``. On any error the temporary file is removed and ``target`` kept.

    Raises:
        OSError: the directory cannot be created or written (the caller names what it was writing).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` (a download, a cache entry) to ``target`` atomically; returns their hex sha256."""
    digest = hashlib.sha256()
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(target: Path, data: Mapping[str, Any]) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def write_parquet_atomic(target: Path, frame: pl.DataFrame) -> str:
    """Write ``frame`` as parquet to ``target`` atomically; returns the file's hex sha256.

    The file is encoded in memory and written by Python: polars' own writer reports a full disk as a
    ``ComputeError``, while this raises the ``OSError`` (``ENOSPC``) that callers name and handle.
    """
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return write_bytes_atomic(target, [buffer.getvalue()])


def remove_stale_temporaries(directory: Path, name: str = "*") -> None:
    """Delete temporary files that a killed writer left in ``directory`` (for targets matching ``name``).

    Only call this while holding the lock that serialises writers of that directory.
    """
    for stale in directory.glob(f".{name}.*{TEMPORARY_SUFFIX}"):
        stale.unlink(missing_ok=True)
