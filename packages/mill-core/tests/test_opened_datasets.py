"""Every benchmark's data is opened before the first run: each once, and every failure named in one error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from mill.core.errors import DataError
from mill.core.opened_datasets import open_every_dataset
from mill.core.planning import RunOptions
from mill.core.sample import ReadOptions


@frozen
class FakeSpec:
    name: str
    content_hash: str


@frozen
class FakeRun:
    spec: FakeSpec


def test_each_dataset_is_opened_once_and_served_to_every_run(tmp_path: Path) -> None:
    opened: list[str] = []

    def opener(spec: Any, data_dir: str | None, options: ReadOptions) -> Any:
        opened.append(spec.name)
        return f"data of {spec.name} from {data_dir}"

    a, b = FakeSpec("a", "1" * 64), FakeSpec("b", "2" * 64)
    runs: Any = [FakeRun(a), FakeRun(b), FakeRun(a)]  # two models on a, one on b
    options = RunOptions(output_dir=None, cache_dir=None, data_dirs={"a": "/data/a"})
    serve = open_every_dataset(runs, options, opener)
    assert opened == ["a", "b"]
    assert serve(a, "/data/a", options.read_options()) == "data of a from /data/a"  # type: ignore[arg-type]
    assert opened == ["a", "b"]


def test_every_missing_dataset_is_named_before_anything_runs() -> None:
    def opener(spec: Any, data_dir: str | None, options: ReadOptions) -> Any:
        if spec.name == "here":
            return "data"
        raise DataError(f"cannot download {spec.name}\nPut the shards in $MILL_DATA_DIR/{spec.name}")

    runs: Any = [FakeRun(FakeSpec(name, name * 8)) for name in ("gone", "here", "lost")]
    with pytest.raises(DataError) as raised:
        open_every_dataset(runs, RunOptions(output_dir=None, cache_dir=None), opener)
    assert str(raised.value) == (
        "2 of 3 benchmarks have no data here; nothing was run:\n"
        "  gone: cannot download gone\n    Put the shards in $MILL_DATA_DIR/gone\n"
        "  lost: cannot download lost\n    Put the shards in $MILL_DATA_DIR/lost"
    )


def test_a_single_benchmark_keeps_the_data_layers_message() -> None:
    def opener(spec: Any, data_dir: str | None, options: ReadOptions) -> Any:
        raise DataError("data directory /x does not exist")

    runs: Any = [FakeRun(FakeSpec("only", "0" * 64))] * 2
    with pytest.raises(DataError, match=r"^data directory /x does not exist$"):
        open_every_dataset(runs, RunOptions(output_dir=None, cache_dir=None), opener)
