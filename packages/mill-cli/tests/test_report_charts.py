"""Without the report extra, ``mill report`` says which package to install instead of failing on an import."""

from __future__ import annotations

import sys

import polars as pl
import pytest

from mill.cli.report import charts


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    frame = pl.DataFrame({"gold_letter": ["A"], "accuracy": [1.0], "stderr": [0.0]})
    with pytest.raises(charts.ReportDependencyError, match=r"mill-cli\[report\]"):
        charts.accuracy_by_position(frame)
