"""``mill report`` on the results directory Mill 0.1.0 wrote (packages/mill-cli/tests/data/results-v0.1.0): here
rather than beside the other readers' tests because it needs the report extra, which only the e2e session has."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Mill = Callable[..., Any]
RESULTS = Path(__file__).resolve().parents[1] / "packages" / "mill-cli" / "tests" / "data" / "results-v0.1.0"


def test_report_writes_a_page_for_0_1_0_results(mill_in_process: Mill, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    page = tmp_path / "report.html"
    outcome = mill_in_process("report", "--output_dir", str(results), "--out", str(page))
    assert outcome.code == 0, outcome.err
    text = page.read_text()
    assert "shapes_mcq_likelihood" in text and "mill-shapes/mill-shapes" in text
