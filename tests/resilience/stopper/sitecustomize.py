"""Test-only: make a ``mill`` subprocess stop itself at a chosen commit, so a test can kill it there.

Mill commits every file by renaming a finished temporary file into place (``os.replace``). With
this folder first on ``PYTHONPATH`` and ``MILL_TEST_STOP_AT`` set to ``before:NAME`` or
``after:NAME`` (NAME a glob of the target's file name: ``chunk-00002.parquet``, ``aggregate.csv``),
the process sends itself SIGSTOP just before or just after that rename. The test then sends
SIGKILL (``kill -9`` at exactly that point) or SIGINT and SIGCONT (Ctrl-C there). Mill itself knows
nothing of this; Python imports ``sitecustomize`` at start-up.
"""

from __future__ import annotations

import fnmatch
import os
import signal
from typing import Any

_POINT = os.environ.get("MILL_TEST_STOP_AT")

if _POINT:
    _when, _, _pattern = _POINT.partition(":")
    _replace = os.replace

    def _stop_around_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        hit = fnmatch.fnmatch(os.path.basename(os.fspath(dst)), _pattern)
        if hit and _when == "before":
            os.kill(os.getpid(), signal.SIGSTOP)
        _replace(src, dst, *args, **kwargs)
        if hit and _when == "after":
            os.kill(os.getpid(), signal.SIGSTOP)

    os.replace = _stop_around_replace
