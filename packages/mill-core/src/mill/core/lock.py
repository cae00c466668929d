"""The one lock idiom: an inter-process lock file beside what it guards.

The lock file is created with the mode the user's umask gives any new file (:func:`~mill.core.atomic.file_mode`),
so a colleague of the same group working in a shared, group-writable directory can take the lock too.
(Older filelock releases create lock files ``0o644`` whatever the umask unless given a mode.)

:func:`results_lock` is how results are locked: a lock that cannot be taken (a read-only directory, a lock
file that is a symbolic link, which is never followed) is a :class:`~mill.core.errors.ResultsError` naming
it. Caches use :func:`file_lock` directly and go on without a lock they cannot take.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from mill.core.atomic import file_mode
from mill.core.errors import ResultsError


def file_lock(path: Path, *, timeout: float = -1) -> FileLock:
    """The lock at ``path`` (not yet acquired); ``timeout`` seconds to wait for it, -1 for ever, 0 not at all."""
    return FileLock(str(path), timeout=timeout, mode=file_mode())


@contextmanager
def results_lock(path: Path, *, timeout: float = -1) -> Iterator[None]:
    """Hold the lock at ``path`` while the block runs.

    Raises:
        filelock.Timeout: another process held it for ``timeout`` seconds.
        ResultsError: the lock file cannot be created or opened, naming it and what to do.
    """
    lock = file_lock(path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ResultsError(
                f"the lock file {path} is a symbolic link, which Mill never follows; remove it and run again"
            ) from None
        raise ResultsError(
            f"cannot take the lock {path} ({exc.strerror or exc}); the results directory must be writable: "
            "fix its permissions, or choose another --output_dir"
        ) from None
    try:
        yield
    finally:
        lock.release()
