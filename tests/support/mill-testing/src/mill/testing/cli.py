"""The ``mill`` command as tests run it: in this process, with its exit status and what it printed."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout

from attrs import frozen


@frozen
class Outcome:
    """What one ``mill`` invocation did: its exit status and what it printed."""

    code: int
    out: str
    err: str


Mill = Callable[..., Outcome]


def run_in_process(*argv: str) -> Outcome:
    """``mill ARGV`` in this process (no interpreter start-up; models stay imported between calls).

    mill-cli is imported here, not at the top, so that sessions without it (core, data) load this plugin.
    """
    from mill.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())
