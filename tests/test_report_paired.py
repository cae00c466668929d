"""``mill report --baseline`` (needs mill-cli[report], installed by the e2e session): models against the
baseline show the paired accuracy difference over their shared samples, with its 95% interval and McNemar's
p-value, not an unpaired difference of means."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from mill.cli.report.page import render_page
from mill.cli.report.runs import gather_runs
from mill.core.comparison import compare, stored_runs
from mill.testing.facts import store_run


class Cells(HTMLParser):
    """The text of every table row of a page, cell by cell."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def per_sample(flipped: tuple[int, ...] = ()) -> pl.DataFrame:
    n = 120
    correct = [(i % 3 != 0) ^ (i in flipped) for i in range(n)]
    gold = [i % 6 for i in range(n)]
    return pl.DataFrame(
        {
            "key": [f"s{i:07d}" for i in range(n)],
            "shard": ["shard-000000.tar"] * n,
            "gold": gold,
            "gold_label": [f"class {g}" for g in gold],
            "prediction": [g if c else (g + 1) % 6 for g, c in zip(gold, correct, strict=True)],
            "prediction_label": ["x"] * n,
            "correct": correct,
            "top5": [[g] for g in gold],
        }
    )


def test_the_baseline_comparison_is_paired(tmp_path: Path) -> None:
    store_run(tmp_path, per_sample(), model="org/base", run_id="r-base")
    store_run(tmp_path, per_sample(flipped=(0, 3, 6, 1)), model="org/other", run_id="r-other")
    html = render_page(gather_runs(tmp_path), baseline="org/base", title="t")
    parser = Cells()
    parser.feed(html)
    at = next(i for i, row in enumerate(parser.rows) if "accuracy Δ (paired 95% CI)" in row)
    header = parser.rows[at]
    assert "mean Δ" not in header
    row = dict(zip(header, parser.rows[at + 1], strict=True))
    assert row["model"] == "org/other"
    expected = compare(*stored_runs(tmp_path, ["org/base", "org/other"]))
    accuracy = expected.metric("accuracy")
    assert row["shared samples"] == "120"
    assert row["accuracy Δ (paired 95% CI)"] == (
        f"{accuracy['difference']:+.4f} [{accuracy['ci_low']:+.4f}, {accuracy['ci_high']:+.4f}]"
    )
    assert accuracy["difference"] == pytest.approx(2 / 120)  # three of four flips turn a wrong answer right
    assert row["McNemar p"] == f"{expected.mcnemar.p_value:.3g}"
    assert (expected.mcnemar.baseline_only, expected.mcnemar.other_only) == (1, 3)


def test_a_run_of_another_spec_version_says_why(tmp_path: Path) -> None:
    store_run(tmp_path, per_sample(), model="org/base", run_id="r-base")
    store_run(tmp_path, per_sample(), model="org/other", run_id="r-other", spec_hash="spec-v2")
    html = render_page(gather_runs(tmp_path), baseline="org/base", title="t")
    assert "not comparable: org/other and org/base ran different versions of benchmark imagenet" in html
