"""Shared fixtures for mill-cli's tests: the ``mill`` command run in-process with no backend installed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from attrs import frozen

from mill.cli.main import main
from mill.core import plugins


@frozen
class Outcome:
    """What one ``mill`` invocation did: its exit status and what it printed."""

    code: int
    out: str
    err: str


Mill = Callable[..., Outcome]


@pytest.fixture(autouse=True)
def no_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every ``mill.backends`` entry point, as in the ``cli`` nox session where none is installed,
    so these tests mean the same in a development environment that has the backends."""
    monkeypatch.setattr(plugins, "entry_points", lambda **_: ())


@pytest.fixture
def mill(capsys: pytest.CaptureFixture[str]) -> Mill:
    """``mill("eval", ...)``: run the command in this process and return its outcome."""

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run
