"""Log records of Mill and of the libraries it drives, each printed once on stderr.

huggingface_hub prints its records through a handler of its own and also passes them up to the root logger;
open_clip logs through the root logger itself, whose first use installs a root handler when there is none
(``logging.basicConfig``). From then on each of the hub client's retry warnings was printed twice. While a
command runs, the root logger has one handler, so nothing installs another, and it leaves out the records a
library's own handler has printed already.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

#: How a library's record reads (Python's default); Mill's own read like its other warnings.
LIBRARY_FORMAT = "%(levelname)s:%(name)s:%(message)s"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record arrives (a test may have redirected it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        del value


class _Format(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(LIBRARY_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "mill" or record.name.startswith("mill."):
            return f"{record.levelname.lower()}: {record.getMessage()}"
        return super().format(record)


def _not_printed_yet(record: logging.LogRecord) -> bool:
    """False when a logger between the record's and the root has a handler: that one printed it."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.root:
        if logger.handlers:
            return False
        logger = logger.parent
    return True


@contextmanager
def printed_once() -> Iterator[None]:
    """Give the root logger the one handler described above (warnings and worse) until the block ends, unless
    it has handlers already: then whoever runs Mill in their process (pytest, a notebook) decides."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = _Stderr()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_Format())
    handler.addFilter(_not_printed_yet)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
