"""A suite's members share one model load: counted through evaluate() with a fake plugin on a suite of three
fixture specs, with each run's facts its own, and the model let go of after its last run."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve, field, frozen

from mill.core.backend import Capabilities, ModelInfo, RunContext
from mill.core.evaluation import evaluate
from mill.core.kinds import zero_shot
from mill.core.kinds.zero_shot import ZeroShotBatchResult, ZeroShotTask
from mill.core.sample import ReadOptions, SampleBatch
from mill.core.spec import Spec

KEYS = [f"s{i}" for i in range(6)]
MEMBERS = ("alpha", "beta", "gamma")
SPEC = """name = "{name}"
description = "a fixture benchmark"
seed = 1
headline_metric = "acc"
[dataset]
source = "memory://{name}"
split = "test"
image_member = "webp"
label_member = "cls"
n_samples = 6
[classes]
count = 3
names = ["a", "b", "c"]
[templates]
list = ["a photo of a {{c}}."]
[variants.{name}]
kind = "zero_shot"
metric = "acc"
top_k = 1
"""


@frozen
class MemoryData:
    keys: Sequence[str] = tuple(KEYS)
    source: str = "memory://fixture"
    shards: Sequence[Any] = ()
    incomplete: bool = False
    skipped: list[Any] = field(factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labels(self) -> list[int]:
        return [int(key[1:]) % 3 for key in self.keys]

    def batches(self, *, batch_size: int, **_: Any) -> Iterator[SampleBatch]:
        keys = list(self.keys)
        yield SampleBatch(keys=keys, shards=["test/0.tar"] * len(keys), labels=self.labels, images=[None] * len(keys))

    def subset(self, keys: Sequence[str]) -> MemoryData:
        return evolve(self, keys=tuple(k for k in self.keys if k in set(keys)))


def _open(spec: Spec, data_dir: str | None, options: ReadOptions) -> MemoryData:
    return MemoryData()


class Weights:
    """What a load produces; a reused backend shares it."""


class Backend:
    """Predicts the gold label; counts, per backend object, the samples it computed (its per-run facts)."""

    def __init__(self, weights: Weights) -> None:
        self.weights = weights
        self.computed = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(identity="fixture/model", settings={"precision": "fp32"}, resolved_args={"path": "x"})

    def run_info(self) -> Mapping[str, Any]:
        return {"computed": self.computed}

    def run_zero_shot(self, task: ZeroShotTask, data: Any) -> Iterator[ZeroShotBatchResult]:
        for batch in data.batches(batch_size=8):
            self.computed += len(batch.keys)
            yield ZeroShotBatchResult(batch.keys, batch.shards, batch.labels, [[g] for g in batch.labels])


class ReusableBackend(Backend):
    def for_next_run(self) -> ReusableBackend:
        return ReusableBackend(self.weights)


class CountingPlugin:
    def __init__(self, backend_type: type[Backend]) -> None:
        self.backend_type = backend_type
        self.loaded: list[weakref.ref[Weights]] = []

    def capabilities(self, args: Mapping[str, Any]) -> Capabilities:
        return Capabilities(kinds=frozenset({zero_shot.NAME}))

    def load(self, args: Mapping[str, Any], context: RunContext) -> Backend:
        weights = Weights()
        self.loaded.append(weakref.ref(weights))
        return self.backend_type(weights)


@pytest.fixture
def trio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three fixture specs and the suite ``trio`` of them, on MILL_SPEC_PATH."""
    (tmp_path / "specs" / "suites").mkdir(parents=True)
    for name in MEMBERS:
        (tmp_path / "specs" / f"{name}.toml").write_text(SPEC.format(name=name))
    suite = f'name = "trio"\ndescription = "d"\nbenchmarks = {list(MEMBERS)!r}\n'.replace("'", '"')
    (tmp_path / "specs" / "suites" / "trio.toml").write_text(suite)
    monkeypatch.setenv("MILL_SPEC_PATH", str(tmp_path / "specs"))
    return tmp_path


def test_a_suite_loads_its_model_once_and_each_run_keeps_its_own_facts(trio: Path) -> None:
    plugin = CountingPlugin(ReusableBackend)
    result = evaluate(plugin, "trio", output_dir=trio / "out", cache_dir=None, open_data=_open)
    assert [run.run.spec.name for run in result.runs] == list(MEMBERS)
    assert len(plugin.loaded) == 1
    # Each run's manifest has its own backend's facts, not the sum over the runs before it.
    assert [run.manifest["run_info"]["computed"] for run in result.runs] == [6, 6, 6]
    assert all(run.metrics["acc"].value == 1.0 for run in result.runs)
    # Once its last run is done, the model is let go of (a second model would not share the device with it).
    gc.collect()
    assert plugin.loaded[0]() is None


def test_two_models_each_load_once(trio: Path) -> None:
    first, second = CountingPlugin(ReusableBackend), CountingPlugin(ReusableBackend)
    result = evaluate([first, second], "trio", output_dir=None, cache_dir=None, open_data=_open)
    assert len(result.runs) == 6
    assert (len(first.loaded), len(second.loaded)) == (1, 1)


def test_a_backend_that_cannot_serve_another_run_is_loaded_for_each(trio: Path) -> None:
    plugin = CountingPlugin(Backend)
    result = evaluate(plugin, "alpha,beta,gamma", output_dir=None, cache_dir=None, open_data=_open)
    assert len(plugin.loaded) == 3
    assert [run.manifest["run_info"]["computed"] for run in result.runs] == [6, 6, 6]
