"""The lock that serialises writers of one cache file across processes.

Writes themselves go through :mod:`mill.core.atomic`, so a reader never sees a half-written file; the lock
only keeps two runs from doing the same work twice.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock


def lock_for(target: Path) -> FileLock:
    """The inter-process lock guarding ``target`` (a sibling ``.lock`` file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target) + ".lock")
