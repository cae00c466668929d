"""Writing a cache file so that a reader never sees it half-written, even across processes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def lock_for(target: Path) -> FileLock:
    """The inter-process lock guarding ``target`` (a sibling ``.lock`` file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target) + ".lock")


def replace_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary file next to ``target``, then rename it over ``target``.

    The rename is atomic on one file system, so concurrent readers see the old file or the new
    one; callers hold :func:`lock_for` so that two writers do not do the same work twice.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
