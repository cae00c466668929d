"""The one lock idiom: an inter-process lock file beside what it guards.

The lock file is created with the mode the user's umask gives any new file (:func:`~mill.core.atomic.file_mode`),
so a colleague of the same group working in a shared, group-writable directory can take the lock too.
(Older filelock releases create lock files ``0o644`` whatever the umask unless given a mode.)
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

from mill.core.atomic import file_mode


def file_lock(path: Path, *, timeout: float = -1) -> FileLock:
    """The lock at ``path`` (not yet acquired); ``timeout`` seconds to wait for it, -1 for ever, 0 not at all."""
    return FileLock(str(path), timeout=timeout, mode=file_mode())
