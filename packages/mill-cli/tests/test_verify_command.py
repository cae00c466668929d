"""``mill verify``: one error line and status 2 for a damaged aggregate or a row whose files are gone,
and ``--rebuild`` from no manifests leaves an empty, checking aggregate (the old file kept aside)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mill.cli.main import EXIT_USER_ERROR
from mill.core.metrics import MetricValue
from mill.core.results import read_aggregate, run_rows, upsert_aggregate
from mill.testing.facts import run_facts

Mill = Callable[..., Any]
FACTS = run_facts(
    model="m/1", benchmark="b", n_samples=3, seed=1, run_id="r", output_file="outputs/m__1/b_0shot.parquet"
)


def test_a_row_whose_files_are_gone_is_a_mismatch(mill: Mill, tmp_path: Path) -> None:
    upsert_aggregate(tmp_path, run_rows(FACTS, "b", {"acc": MetricValue(0.5, 0.1)}, ("acc", "acc")))
    outcome = mill("verify", "--output_dir", str(tmp_path))
    assert outcome.code == EXIT_USER_ERROR
    assert "mismatched" in outcome.out and "b_0shot.parquet is missing" in outcome.out
    (line,) = [line for line in outcome.err.splitlines() if line.startswith("error:")]
    assert "0 verified, 1 mismatched, 0 unverifiable" in line


def test_a_damaged_aggregate_is_one_error_and_rebuild_keeps_it(mill: Mill, tmp_path: Path) -> None:
    upsert_aggregate(tmp_path, run_rows(FACTS, "b", {"acc": MetricValue(0.5, 0.1)}, ("acc", "acc")))
    aggregate = tmp_path / "aggregate.csv"
    aggregate.write_text(aggregate.read_text().replace("0.5", "0.9"))  # edited by hand: no longer what was written
    outcome = mill("verify", "--output_dir", str(tmp_path))
    assert outcome.code == EXIT_USER_ERROR
    assert outcome.err.count("error:") == 1 and "aggregate.csv is damaged" in outcome.err
    assert mill("collect", "--output_dir", str(tmp_path)).code == EXIT_USER_ERROR

    rebuilt = mill("verify", "--output_dir", str(tmp_path), "--rebuild")
    assert rebuilt.code == 0, rebuilt.err
    assert "rebuilt" in rebuilt.err and "0 rows" in rebuilt.err
    assert read_aggregate(tmp_path).is_empty()
    (kept,) = tmp_path.glob("aggregate.csv.*.bak")
    assert "0.9" in kept.read_text()


def test_a_lock_file_that_is_a_symlink_is_never_followed(mill: Mill, tmp_path: Path) -> None:
    upsert_aggregate(tmp_path, run_rows(FACTS, "b", {"acc": MetricValue(0.5, 0.1)}, ("acc", "acc")))
    precious = tmp_path / "precious.txt"
    precious.write_text("not a lock")
    (tmp_path / "aggregate.csv.lock").unlink(missing_ok=True)
    (tmp_path / "aggregate.csv.lock").symlink_to(precious)
    outcome = mill("verify", "--output_dir", str(tmp_path), "--rebuild")
    assert outcome.code == EXIT_USER_ERROR and "Traceback" not in outcome.err
    (line,) = [line for line in outcome.err.splitlines() if line.startswith("error:")]
    assert f"the lock file {tmp_path / 'aggregate.csv.lock'} is a symbolic link" in line
    assert precious.read_text() == "not a lock"


def test_verify_of_a_directory_that_does_not_exist_is_an_error(mill: Mill, tmp_path: Path) -> None:
    # It used to say "0 verified" and exit 0: a typo in --output_dir passed for a clean bill.
    for argv in ([], ["--rebuild"]):
        outcome = mill("verify", "--output_dir", str(tmp_path / "typo"), *argv)
        assert outcome.code == EXIT_USER_ERROR
        assert outcome.err.startswith(f"error: the output directory {tmp_path / 'typo'} does not exist")
    assert not (tmp_path / "typo").exists()
