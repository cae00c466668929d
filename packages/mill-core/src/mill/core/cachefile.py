"""Cache files (classifiers, shard indexes, file hashes): written atomically under a lock, and never worth
failing a run for.

A cache only saves time, so a cache directory that is full or not writable costs a warning and the
time of recomputing, never the run: :func:`cache_lock` and :func:`write_cache` swallow ``OSError``
after saying so. Results are the opposite: :mod:`mill.core.atomic` raises, and the run stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mill.core.atomic import atomic_path
from mill.core.lock import file_lock

log = logging.getLogger(__name__)


@contextmanager
def cache_lock(target: Path) -> Iterator[None]:
    """Hold the inter-process lock guarding ``target`` (a sibling ``.lock`` file), so that concurrent runs
    build one cache entry once; where the lock cannot be created, warn and go on unlocked (two runs may
    then both build it, which costs time only)."""
    lock = file_lock(target.with_name(target.name + ".lock"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as error:
        log.warning("cannot lock cache file %s (%s); going on without the lock", target, _reason(error))
        yield
        return
    try:
        yield
    finally:
        lock.release()


def write_cache(target: Path, write: Callable[[Path], object]) -> bool:
    """Call ``write`` on a temporary file beside ``target`` and rename it into place (atomically, with the
    umask's mode). Returns False, after a warning, when the file cannot be written (a full disk, a cache
    directory of someone else's): the caller goes on with what it computed, uncached."""
    try:
        with atomic_path(target) as tmp:
            write(tmp)
    except OSError as error:
        log.warning("cannot write cache file %s (%s); going on without caching it", target, _reason(error))
        return False
    return True


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
