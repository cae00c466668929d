"""``mill compare``: stored runs of one benchmark compared over their shared samples, printed as a person reads
them (a whole table, piped), as CSV and as JSON with numbers as numbers; runs that cannot be compared are one
error line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mill.cli.main import EXIT_USER_ERROR
from mill.testing.facts import store_run

Mill = Callable[..., Any]
N_SAMPLES = 200
#: Samples whose answer the second run flips: three become wrong, two become right.
FLIPPED = (0, 1, 2, 3, 4)


def per_sample() -> pl.DataFrame:
    """A zero-shot run of 200 samples over four classes: every sample but each fifth right, then rows
    ``FLIPPED`` set so that 0, 1, 2 are right and 3, 4 wrong."""
    correct = [i % 5 != 0 for i in range(N_SAMPLES)]
    correct[:5] = [True, True, True, False, False]
    gold = [i % 4 for i in range(N_SAMPLES)]
    return pl.DataFrame(
        {
            "key": [f"s{i:07d}" for i in range(N_SAMPLES)],
            "gold": gold,
            "gold_label": [f"class {g}" for g in gold],
            "correct": correct,
        }
    )


def flipped(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(correct=pl.col("correct") ^ pl.Series([i in FLIPPED for i in range(frame.height)]))


def closed_form_p(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value written out: 2 P[X <= min(b, c)], X ~ binomial(b + c, 1/2)."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


def piped(*argv: str) -> subprocess.CompletedProcess[str]:
    """``mill ARGV`` in a new process, its output piped (not a terminal) as into ``less`` or a file."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mill.cli", *argv], capture_output=True, text=True, env=env)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    base = per_sample()
    store_run(tmp_path, base, model="org/base", run_id="r-base")
    store_run(tmp_path, flipped(base), model="org/other", run_id="r-other")
    store_run(tmp_path, base, model="org/same", run_id="r-same")
    store_run(tmp_path, base, model="org/newer", run_id="r-newer", spec_hash="spec-v2")
    store_run(tmp_path, base.slice(50), model="org/part", run_id="r-part")
    return tmp_path


def test_markdown_piped_as_a_person_reads_it(results: Path) -> None:
    done = piped(
        "compare", "org/base", "org/other", "--output_dir", str(results), "--format", "markdown", "--resamples", "2000"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    p = closed_form_p(3, 2)
    assert lines[:5] == [
        "### Shared samples",
        "",
        "| baseline | run | shared | baseline only | run only |",
        "|---|---|---|---|---|",
        "| org/base imagenet | org/other imagenet | 200 | 0 | 0 |",
    ]
    at = lines.index("### McNemar's exact test of accuracy")
    assert lines[at : at + 5] == [
        "### McNemar's exact test of accuracy",
        "",
        "| baseline | run | shared | baseline only right | run only right | p_value |",
        "|---|---|---|---|---|---|",
        f"| org/base imagenet | org/other imagenet | 200 | 3 | 2 | {p:.4g} |",
    ]
    at = lines.index("### Differences (run − baseline) with their paired bootstrap 95% interval")
    header, _, accuracy = lines[at + 2 : at + 5]
    assert header == ("| baseline | run | metric | baseline value | run value | difference | ci_low | ci_high |")
    cells = [cell.strip() for cell in accuracy.strip("|").split("|")]
    assert cells[:6] == ["org/base imagenet", "org/other imagenet", "accuracy", "0.7950", "0.7900", "-0.0050"]
    assert float(cells[6]) <= -0.005 <= float(cells[7])
    at = lines.index("### Classes differing most: org/other imagenet vs org/base imagenet")
    assert lines[at + 2 : at + 8] == [
        "| class | n | baseline accuracy | run accuracy | difference |",
        "|---|---|---|---|---|",
        # Classes 1 and 2 lose one right answer each, class 3 gains one; in class 0 a loss and a gain cancel.
        "| class 1 | 50 | 0.8000 | 0.7800 | -0.0200 |",
        "| class 2 | 50 | 0.8000 | 0.7800 | -0.0200 |",
        "| class 3 | 50 | 0.7800 | 0.8000 | +0.0200 |",
        "| class 0 | 50 | 0.8000 | 0.8000 | +0.0000 |",
    ]
    assert lines[-1].startswith("difference = run − baseline over the shared samples; interval: 2000 paired")
    assert "Traceback" not in done.stdout + done.stderr


def test_the_whole_rich_table_when_piped(results: Path) -> None:
    done = piped("compare", "org/base", "r-same", "--output_dir", str(results), "--resamples", "500")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    at = text.index("McNemar's exact test of accuracy")
    table = text[at:].splitlines()[1:6]
    assert [line.split("│")[1:-1] for line in table if "│" in line] == [
        [
            " org/base imagenet ",
            " org/same imagenet ",
            " 200    ",
            " 0                   ",
            " 0              ",
            " 1       ",
        ]
    ]
    differences = text[text.index("Differences (run − baseline)") : at]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in differences.splitlines() if "│" in line]
    assert [row[2:] for row in rows] == [
        ["accuracy", "0.7950", "0.7950", "+0.0000", "+0.0000", "+0.0000"],
        ["mean_per_class_recall", "0.7950", "0.7950", "+0.0000", "+0.0000", "+0.0000"],
    ]


def test_json_holds_numbers(mill: Mill, results: Path) -> None:
    outcome = mill("compare", "org/base", "org/other", "--output_dir", str(results), "--format", "json")
    assert outcome.code == 0, outcome.err
    document = json.loads(outcome.out)
    assert document["samples"] == [
        {"baseline": "org/base imagenet", "run": "org/other imagenet", "shared": 200, "baseline only": 0, "run only": 0}
    ]
    (test,) = document["mcnemar"]
    assert (test["baseline only right"], test["run only right"]) == (3, 2)
    assert test["p_value"] == pytest.approx(closed_form_p(3, 2), rel=1e-12)
    accuracy = next(row for row in document["differences"] if row["metric"] == "accuracy")
    assert accuracy["difference"] == pytest.approx(-0.005)
    assert accuracy["ci_low"] <= -0.005 <= accuracy["ci_high"]
    assert {row["class"] for row in document["classes"]} == {"class 0", "class 1", "class 2", "class 3"}
    assert all(isinstance(row["n"], int) and isinstance(row["difference"], float) for row in document["classes"])


def test_csv_and_several_runs_each_against_the_first(mill: Mill, results: Path) -> None:
    outcome = mill("compare", "org/base", "org/other", "org/part", "--output_dir", str(results), "--format", "csv")
    assert outcome.code == 0, outcome.err
    frame = pl.read_csv(outcome.out.encode())
    samples = frame.filter(pl.col("table") == "samples").select("run", "shared", "baseline only", "run only")
    assert samples.rows() == [("org/other imagenet", 200, 0, 0), ("org/part imagenet", 150, 50, 0)]
    mcnemar = frame.filter(pl.col("table") == "mcnemar")
    assert mcnemar["run"].to_list() == ["org/other imagenet", "org/part imagenet"]
    assert set(mcnemar["baseline"]) == {"org/base imagenet"}


def test_shared_and_unshared_counts_are_printed(mill: Mill, results: Path) -> None:
    outcome = mill("compare", "org/base", "org/part", "--output_dir", str(results), "--format", "markdown")
    assert outcome.code == 0, outcome.err
    assert "| org/base imagenet | org/part imagenet | 150 | 50 | 0 |" in outcome.out.splitlines()


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        (("org/base", "org/newer"), "ran different versions of benchmark imagenet (spec hash spec-v2 and spec-v1)"),
        (("org/base", "org/nobody"), "no stored run in"),
        (("org/base",), "a comparison needs two runs or more"),
    ],
)
def test_runs_that_cannot_be_compared_are_one_error(
    mill: Mill, results: Path, runs: tuple[str, ...], message: str
) -> None:
    outcome = mill("compare", *runs, "--output_dir", str(results))
    assert outcome.code == EXIT_USER_ERROR
    assert outcome.out == ""
    assert outcome.err.startswith("error: ") and outcome.err.count("\n") == 1
    assert message in outcome.err
