"""The Python examples in docs/backends.md work: the example plugin and backend satisfy the typed contract the
engine checks, and the example task kind answers and scores like Mill's own kinds.

Each ```python fence there starts with a ``# package/module.py`` comment; it is run as that module.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mill.core.backend import BackendPlugin, RunContext
from mill.core.convert import structure
from mill.core.errors import BackendArgumentError
from mill.core.kinds import zero_shot
from mill.core.sample import SampleBatch
from mill.core.task_kind import TaskKind

DOC = Path(__file__).resolve().parents[1] / "docs" / "backends.md"
FENCE = re.compile(r"^```python\n# (?P<path>[\w/]+)\.py\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)


class Source:
    """Samples ``k0``, ``k1``, ... with the given labels, in one shard, read in batches."""

    def __init__(self, labels: Sequence[int]) -> None:
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def keys(self) -> Sequence[str]:
        return [f"k{i}" for i in range(len(self.labels))]

    def batches(self, *, batch_size: int, **_: Any) -> Iterator[SampleBatch]:
        for start in range(0, len(self.labels), batch_size):
            labels = self.labels[start : start + batch_size]
            keys = self.keys[start : start + batch_size]
            yield SampleBatch(keys=keys, shards=["0.tar"] * len(keys), labels=labels, images=[None] * len(keys))

    def subset(self, keys: Sequence[str]) -> Source:
        raise NotImplementedError


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> dict[str, types.ModuleType]:
    """Every example module of the page, importable under its name while the test runs."""
    modules = {}
    for match in FENCE.finditer(DOC.read_text(encoding="utf-8")):
        name = match["path"].replace("/", ".")
        parent = name.rpartition(".")[0]
        if parent not in sys.modules:
            package = types.ModuleType(parent)
            package.__path__ = []
            monkeypatch.setitem(sys.modules, parent, package)
        module = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, module)
        exec(compile(match["code"], f"{DOC}:{name}", "exec"), module.__dict__)
        modules[name] = module
    assert set(modules) == {"my_package.mill_plugin", "my_package.backend", "my_kinds.fixed_head"}
    return modules


def test_example_backend_meets_the_contract(examples: dict[str, types.ModuleType], tmp_path: Path) -> None:
    plugin = examples["my_package.mill_plugin"].plugin
    assert isinstance(plugin, BackendPlugin)
    assert plugin.capabilities({}).serves(zero_shot.NAME)
    with pytest.raises(BackendArgumentError, match=r"constant backend: batch_size: expected an integer"):
        plugin.capabilities({"batch_size": "many"})
    backend = plugin.load({"batch_size": 2}, RunContext(cache_dir=tmp_path, batch_size=64))
    assert isinstance(backend, zero_shot.ZeroShotBackend)
    assert backend.batch_size == 2  # the model spec's value wins over the flag
    task = zero_shot.kind.build_task(_spec(), "toy", zero_shot.ZeroShotVariant("zero_shot", "acc", top_k=2), 0)
    raw = pl.concat(zero_shot.kind.answer(backend, task, Source([0, 1, 2, 0, 1])))
    scored = zero_shot.kind.score(task, zero_shot.ZeroShotVariant("zero_shot", "acc", top_k=2), raw, 0)
    # Always "class 0, then class 1": top-1 right for the two 0s, top-2 right for every 0 and 1.
    assert scored.metrics["acc"].value == pytest.approx(2 / 5)
    assert scored.metrics["acc2"].value == pytest.approx(4 / 5)


def test_example_task_kind_has_every_member_and_scores(examples: dict[str, types.ModuleType]) -> None:
    module = examples["my_kinds.fixed_head"]
    kind = module.kind
    members = {name for name in vars(TaskKind) if not name.startswith("_")}
    assert members == {
        "name", "variant_type", "backend_protocol", "raw_schema", "mark", "rescorer",
        "check_variant", "settings", "build_task", "answer", "score", "metrics",
    }  # fmt: skip
    assert all(hasattr(kind, name) for name in members)
    variant = structure({"kind": "fixed_head", "metric": "acc"}, kind.variant_type)
    assert kind.check_variant(variant, 3) == []

    class Head:
        info = None

        def run_info(self) -> dict[str, Any]:
            return {}

        def run_fixed_head(self, task: Any, data: Source) -> Iterator[pl.DataFrame]:
            for batch in data.batches(batch_size=2):
                yield pl.DataFrame({"key": batch.keys, "shard": batch.shards, "gold": batch.labels, "prediction": 1})

    assert isinstance(Head(), kind.backend_protocol)
    task = kind.build_task(_spec(), "head", variant, 0)
    raw = pl.concat(kind.answer(Head(), task, Source([1, 0, 1, 2])))
    assert raw.schema == pl.Schema({"key": pl.String, "shard": pl.String, "gold": pl.Int64, "prediction": pl.Int64})
    scored = kind.score(task, variant, raw, 0)
    assert scored.metrics["acc"].value == pytest.approx(0.5)
    assert scored.frame["correct"].to_list() == [True, False, True, False]


def _spec() -> Any:
    """The fields of a spec the examples read."""
    dataset = types.SimpleNamespace(metadata_fields=(), group_by=None)  # samples without metadata rows
    return types.SimpleNamespace(
        name="toy", classnames=("a", "b", "c"), templates=("a photo of a {c}.",), dataset=dataset
    )
