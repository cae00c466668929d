"""``mill report`` writes its page through the one atomic writer: a planted symbolic link is replaced, never
written through, and a write that fails leaves the previous page whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mill.cli.report import page
from mill.cli.report.page import ReportError, write_report


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    """No runs to gather: the page is a fixed text (the write is what is under test)."""
    monkeypatch.setattr(page, "gather_runs", lambda *_, **__: [])
    monkeypatch.setattr(page, "render_page", lambda *_, **__: "<html>new report</html>")


@pytest.mark.usefixtures("rendered")
def test_a_symlink_at_the_report_path_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    (tmp_path / "report.html").symlink_to(victim)
    written = write_report(tmp_path)
    assert victim.read_text() == "someone else's file"
    assert not written.is_symlink() and written.read_text() == "<html>new report</html>"


@pytest.mark.usefixtures("rendered")
def test_a_failed_write_leaves_the_previous_page_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = tmp_path / "report.html"
    previous.write_text("<html>old report</html>")

    def interrupted(fd: int) -> Any:  # the process dies (here: a full disk) before the page is complete
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(ReportError, match=r"cannot write the report to .*report\.html \(No space left on device\)"):
        write_report(tmp_path)
    assert previous.read_text() == "<html>old report</html>"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
