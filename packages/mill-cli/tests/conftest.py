"""Shared fixtures for mill-cli's tests: the ``mill`` command run in-process with no backend installed."""

from __future__ import annotations

import pytest

from mill.core import plugins
from mill.testing.cli import Mill


@pytest.fixture(autouse=True)
def no_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every ``mill.backends`` entry point, as in the ``cli`` nox session where none is installed,
    so these tests mean the same in a development environment that has the backends."""
    monkeypatch.setattr(plugins, "entry_points", lambda **_: ())


@pytest.fixture
def mill(mill_in_process: Mill) -> Mill:
    """``mill("eval", ...)``: the ``mill_testing`` plugin's in-process command, with no backend installed."""
    return mill_in_process
