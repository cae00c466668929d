"""A task kind from a third party's distribution, run end to end by ``mill eval``.

tests/support/mill-echo-kind registers the ``label_parity`` kind under ``mill.task_kinds`` and the
``label_echo`` backend under ``mill.backends``; mill-core's files name neither. Its spec is passed with
``--spec`` and its data is real shards, so what is checked here (aggregate rows, the kind's per-sample
columns, its table mark) went through the same planning, chunked commits, scoring and writing as Mill's
own kinds.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from attrs import frozen

from mill.cli.main import EXIT_USER_ERROR
from mill.core.batch_size import BATCH_SIZE_SCHEMA
from mill.core.results import read_aggregate
from mill.core.specfile import load_spec
from mill.core.task_kind import get_kind
from mill.data import write_synthetic_shards
from mill.echo_kind import SPEC_FILE
from mill.echo_kind.backend import DEFAULT_BATCH_SIZE
from mill.echo_kind.backend import NAME as BACKEND
from mill.echo_kind.kind import MARK, OUTPUT_SCHEMA, kind
from mill.testing.cli import Mill, Outcome

#: The label_echo backend answers wrongly for labels below this, so the accuracy is known without a model.
WRONG_BELOW = 3


@frozen
class ParityRun:
    outcome: Outcome
    output_dir: Path
    golds: list[int]

    @property
    def accuracy(self) -> float:
        """What the run must report: the share of samples the backend answers rightly."""
        return sum(gold >= WRONG_BELOW for gold in self.golds) / len(self.golds)


@pytest.fixture(scope="module")
def parity_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards holding exactly the samples SPEC_FILE expects."""
    spec = load_spec(SPEC_FILE)
    n_classes = len(spec.classnames)
    root = tmp_path_factory.mktemp("parity-shards")
    write_synthetic_shards(root, n_classes=n_classes, per_class=spec.dataset.n_samples // n_classes, n_shards=2)
    return root


def _eval(mill: Mill, model: str, spec: Path, data: Path, out: Path) -> Outcome:
    argv = ("eval", model, "parity", "--spec", str(spec), "--data_dir", str(data), "--output_dir", str(out))
    return mill(*argv, "--cache_dir", str(out / "cache"), "--quiet")


@pytest.fixture(scope="module")
def parity_run(mill_in_process: Mill, parity_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> ParityRun:
    out = tmp_path_factory.mktemp("parity-results")
    outcome = _eval(mill_in_process, f"{BACKEND}[wrong_below={WRONG_BELOW}]", SPEC_FILE, parity_shards, out)
    # Labels as write_synthetic_shards lays them out: class-ordered, the same number per class.
    spec = load_spec(SPEC_FILE)
    per_class = spec.dataset.n_samples // len(spec.classnames)
    return ParityRun(outcome, out, [index // per_class for index in range(spec.dataset.n_samples)])


def test_the_kind_comes_from_its_own_distribution() -> None:
    assert get_kind("label_parity") is kind


def test_eval_writes_the_kinds_aggregate_rows(parity_run: ParityRun) -> None:
    assert parity_run.outcome.code == 0, parity_run.outcome.err
    rows = read_aggregate(parity_run.output_dir)
    expected = parity_run.accuracy
    # The variant's row and the benchmark's rollup row, both carrying the kind's name as task_type.
    assert sorted(zip(rows["task"], rows["metric"], rows["performance"], strict=True)) == [
        ("parity", "parity_acc", pytest.approx(expected)),
        ("parity_echo", "parity_acc", pytest.approx(expected)),
    ]
    assert set(rows["task_type"]) == {"label_parity"}
    assert set(rows["model"]) == {BACKEND}
    assert set(rows["n_samples"]) == {len(parity_run.golds)}
    # The kind's settings (modulus) join the backend's (wrong_below) in the run's settings.
    assert set(rows["settings"]) == {f"modulus=2,wrong_below={WRONG_BELOW}"}


def test_eval_writes_the_per_sample_columns_the_kind_declares(parity_run: ParityRun) -> None:
    files = read_aggregate(parity_run.output_dir)["output_file"].unique().to_list()
    assert len(files) == 1
    frame = pl.read_parquet(parity_run.output_dir / files[0])
    # The kind's columns, then the engine's batch size (null: this backend does not batch through the fall-back).
    assert frame.schema == pl.Schema({**OUTPUT_SCHEMA, **BATCH_SIZE_SCHEMA})
    assert frame["batch_size"].null_count() == frame.height
    assert frame["gold"].to_list() == parity_run.golds
    assert frame["residue"].to_list() == [gold % 2 for gold in parity_run.golds]
    assert frame["correct"].to_list() == [gold >= WRONG_BELOW for gold in parity_run.golds]
    manifest = json.loads((parity_run.output_dir / files[0]).with_suffix(".json").read_text())
    assert manifest["backend"] == BACKEND
    assert manifest["run_info"] == {"n_batches": -(-len(parity_run.golds) // DEFAULT_BATCH_SIZE)}


def test_collect_marks_the_kinds_cells(mill_in_process: Mill, parity_run: ParityRun) -> None:
    outcome = mill_in_process("collect", "--output_dir", str(parity_run.output_dir), "--format", "markdown")
    assert outcome.code == 0, outcome.err
    # Non-default settings (wrong_below) add Mill's own mark after the kind's.
    cell = f"{parity_run.accuracy:.4f}{MARK.symbol}*"
    assert f"| {BACKEND} | {cell} | {cell} |" in outcome.out.splitlines()
    assert f"{MARK.symbol} {MARK.legend}" in outcome.out


def test_the_kind_checks_its_own_variant(mill_in_process: Mill, parity_shards: Path, tmp_path: Path) -> None:
    spec = tmp_path / "parity.toml"
    spec.write_text(SPEC_FILE.read_text().replace("modulus = 2", "modulus = 11"))
    outcome = _eval(mill_in_process, BACKEND, spec, parity_shards, tmp_path / "out")
    assert outcome.code == EXIT_USER_ERROR
    assert f"{spec}: variants.parity_echo.modulus: expected 2 to 10 (the number of classes), got 11" in outcome.err


def test_the_backend_structures_its_arguments_with_the_spec_converter(
    mill_in_process: Mill, parity_shards: Path, tmp_path: Path
) -> None:
    outcome = _eval(mill_in_process, f"{BACKEND}[wrong_below=few]", SPEC_FILE, parity_shards, tmp_path / "out")
    assert outcome.code == EXIT_USER_ERROR
    assert f"{BACKEND} backend: wrong_below: expected an integer, got 'few'" in outcome.err
    assert not (tmp_path / "out" / "aggregate.csv").exists()
