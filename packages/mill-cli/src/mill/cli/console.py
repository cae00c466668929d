"""Where the CLI prints: tables on stdout, progress and notes on stderr, and tables laid out so that
no cell is ever cut.

On a terminal rich fits a table to the window, folding a long cell onto more lines rather than cutting
it. With no terminal (a SLURM log, ``nohup``, ``mill ls | grep ...``) there is no window to fit: rich would
assume 80 columns and cut cells (``imagenet_mc…``), so the width is left unbounded and each table is as
wide as its content. ``COLUMNS`` is ignored then: a log has no width.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

#: Width given to a console with no terminal: wider than any table, so none is ever cut or wrapped.
UNBOUNDED_WIDTH = 1_000_000


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=UNBOUNDED_WIDTH, soft_wrap=True)


def table_console() -> Console:
    """The console tables are printed on (stdout)."""
    return _console(stderr=False)


def progress_console() -> Console:
    """The console progress and run headers are printed on (stderr), so stdout holds only results."""
    return _console(stderr=True)


def content_table(title: str, columns: Iterable[str], *, right: Iterable[str] = ()) -> Table:
    """A table whose cells fold onto more lines on a narrow terminal instead of being cut; the columns
    named in ``right`` are right-aligned (numbers)."""
    table = Table(title=title)
    aligned = set(right)
    for column in columns:
        table.add_column(column, justify="right" if column in aligned else "left", overflow="fold")
    return table
