"""The engine end to end without torch: a fake backend and an in-memory dataset through plan, chunked
commits, an interruption, resume, scoring, the per-sample file, the manifest and the aggregate rows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from attrs import evolve, field, frozen

from mill.core.backend import Capabilities, ModelInfo, RunContext
from mill.core.chunks import RUNS_DIR
from mill.core.engine import PlannedRun, RunInterrupted, RunOptions, execute, load_backend
from mill.core.errors import BackendArgumentError
from mill.core.kinds import zero_shot
from mill.core.kinds.zero_shot import ZeroShotBatchResult, ZeroShotTask
from mill.core.model_spec import parse_model_spec
from mill.core.plugins import LoadedPlugin, ResolvedModel
from mill.core.results import read_aggregate
from mill.core.sample import ReadOptions, SampleBatch
from mill.core.spec import DatasetSpec, Spec
from mill.core.task_kind import get_kind

N_CLASSES = 4
KEYS = [f"s{i:03d}" for i in range(10)]
LABELS = [i % N_CLASSES for i in range(10)]


@frozen
class Shard:
    name: str
    size: int


@frozen
class MemoryDataset:
    """A :class:`~mill.core.sample.Dataset` held in memory: keys, labels, and no images worth decoding."""

    keys: Sequence[str]
    labels: Sequence[int]
    source: str = "memory://fake"
    shards: Sequence[Shard] = (Shard("test/0.tar", 1234),)
    incomplete: bool = False
    skipped: list[Any] = field(factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def batches(self, *, batch_size: int, **_: Any) -> Iterator[SampleBatch]:
        for start in range(0, len(self.keys), batch_size):
            keys = list(self.keys[start : start + batch_size])
            labels = list(self.labels[start : start + batch_size])
            yield SampleBatch(keys=keys, shards=["test/0.tar"] * len(keys), labels=labels, images=[None] * len(keys))

    def subset(self, keys: Sequence[str]) -> MemoryDataset:
        wanted = set(keys)
        pairs = [(k, y) for k, y in zip(self.keys, self.labels, strict=True) if k in wanted]
        return evolve(self, keys=[k for k, _ in pairs], labels=[y for _, y in pairs], skipped=[])


class FakeZeroShotBackend:
    """Predicts ``(gold + shift) % n`` for every sample, so accuracy is known; counts what it computed and
    can be told to stop (as Ctrl-C would) after some batches."""

    def __init__(self, *, shift: int = 0, stop_after: int | None = None) -> None:
        self.shift = shift
        self.stop_after = stop_after
        self.computed: list[str] = []

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(identity="fake/model", settings={"precision": "fp32"}, resolved_args={"path": "fake"})

    def run_info(self) -> Mapping[str, Any]:
        return {"fake": True}

    def run_zero_shot(self, task: ZeroShotTask, data: Any) -> Iterator[ZeroShotBatchResult]:
        for number, batch in enumerate(data.batches(batch_size=3)):
            if self.stop_after is not None and number == self.stop_after:
                raise KeyboardInterrupt
            self.computed.extend(batch.keys)
            n = len(task.classnames)
            topk = [[(gold + self.shift + j) % n for j in range(task.top_k)] for gold in batch.labels]
            yield ZeroShotBatchResult(keys=batch.keys, shards=batch.shards, golds=batch.labels, topk=topk)


@frozen
class FakePlugin:
    backend: Any

    def capabilities(self, args: Mapping[str, Any]) -> Capabilities:
        return Capabilities(kinds=frozenset({zero_shot.NAME}))

    def load(self, args: Mapping[str, Any], context: RunContext) -> Any:
        return self.backend


def _spec(top_k: int = 2) -> Spec:
    variant = zero_shot.ZeroShotVariant(kind="zero_shot", metric="acc", top_k=top_k)
    return Spec(
        name="fake",
        description="a fake benchmark",
        seed=7,
        headline_metric="acc",
        dataset=DatasetSpec(source="memory://fake", split="test", image_member="x", label_member="cls", n_samples=10),
        classnames=tuple(f"class {i}" for i in range(N_CLASSES)),
        templates=("a photo of a {c}.",),
        variants={"fake": variant},
        reported=(),
        path=Path("fake.toml"),
        content_hash="0" * 64,
    )


def _planned(backend: Any, spec: Spec | None = None) -> PlannedRun:
    spec = spec or _spec()
    model = ResolvedModel("fake", {"path": "fake"}, parse_model_spec("fake[path=fake]"))
    plugin = LoadedPlugin("fake", FakePlugin(backend), "mill-fake")
    return PlannedRun(model, plugin, spec, "fake", spec.variants["fake"], get_kind("zero_shot"))


def _open_data(spec: Spec, data_dir: str | None, options: ReadOptions) -> MemoryDataset:
    return MemoryDataset(KEYS, LABELS)


def _run(tmp_path: Path, backend: Any, *, chunk_size: int = 3, spec: Spec | None = None) -> Any:
    options = RunOptions(output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", chunk_size=chunk_size)
    return execute(_planned(backend, spec), options, RunContext(cache_dir=tmp_path / "cache"), open_data=_open_data)


def test_engine_runs_end_to_end_and_resumes_after_an_interruption(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = FakeZeroShotBackend(shift=0, stop_after=2)
    with pytest.raises(RunInterrupted, match=r"interrupted: 6 of 10 samples .* committed"):
        _run(tmp_path, first)
    assert first.computed == KEYS[:6]
    run_dirs = list((out / RUNS_DIR).iterdir())
    assert len(run_dirs) == 1 and len(list(run_dirs[0].glob("chunk-*.parquet"))) == 2

    second = FakeZeroShotBackend(shift=0)
    rows = _run(tmp_path, second)
    assert second.computed == KEYS[6:]  # nothing committed is computed again
    by_metric = {row.metric: row for row in rows}
    assert set(by_metric) == {"acc", "acc2", "mean_per_class_recall"}
    assert by_metric["acc"].performance == 1.0 and by_metric["acc"].n_samples == 10
    assert by_metric["acc"].task_type == "zero_shot"

    aggregate = read_aggregate(out)
    assert sorted(aggregate["metric"].to_list()) == ["acc", "acc2", "mean_per_class_recall"]
    per_sample = pl.read_parquet(out / rows[0].output_file)
    assert per_sample.columns == [
        "key", "shard", "gold", "gold_label", "prediction", "prediction_label", "top2", "correct"
    ]  # fmt: skip
    assert per_sample["key"].to_list() == KEYS
    assert per_sample["gold_label"].to_list() == [f"class {y}" for y in LABELS]
    manifest = json.loads((out / rows[0].output_file).with_suffix(".json").read_text())
    assert manifest["n_reused"] == 6 and manifest["n_samples"] == 10
    assert manifest["versions"]["mill-core"]
    assert manifest["metrics"]["acc"]["value"] == 1.0
    assert manifest["run_info"] == {"fake": True}


def test_top_k_of_one_writes_no_top_k_metric(tmp_path: Path) -> None:
    rows = _run(tmp_path, FakeZeroShotBackend(shift=1), spec=_spec(top_k=1))
    assert sorted(row.metric for row in rows) == ["acc", "mean_per_class_recall"]
    assert {row.metric: row.performance for row in rows}["acc"] == 0.0
    assert "top1" in pl.read_parquet(tmp_path / "out" / rows[0].output_file).columns


def test_a_backend_that_fails_its_kinds_protocol_is_named(tmp_path: Path) -> None:
    planned = _planned(object())  # neither info nor run_zero_shot
    with pytest.raises(BackendArgumentError, match=r"backend 'fake' \(from mill-fake\) .* ZeroShotBackend"):
        load_backend(planned, RunContext(cache_dir=tmp_path))


def test_results_are_independent_of_chunk_size(tmp_path: Path) -> None:
    frames: list[pl.DataFrame] = []
    for chunk_size in (1, 4, 100):
        rows = _run(tmp_path / str(chunk_size), FakeZeroShotBackend(shift=1), chunk_size=chunk_size)
        frames.append(pl.read_parquet(tmp_path / str(chunk_size) / "out" / rows[0].output_file))
    assert all(frame.equals(frames[0]) for frame in frames)


class ShrinkingBackend(FakeZeroShotBackend):
    """A :class:`~mill.core.backend.ResumableBackend` whose batch size falls from 3 to 2 (as after running out
    of memory) after its second batch; it records the batch size each run started at."""

    def __init__(self, *, stop_after: int | None = None) -> None:
        super().__init__(stop_after=stop_after)
        self.size = 3
        self.resumed_from: Mapping[str, Any] | None = None
        self.started_at: int | None = None

    def run_info(self) -> Mapping[str, Any]:
        return {"batch_size": self.size}

    def resume(self, previous: Mapping[str, Any]) -> None:
        self.resumed_from = previous
        self.size = int(previous["batch_size"])

    def run_zero_shot(self, task: ZeroShotTask, data: Any) -> Iterator[ZeroShotBatchResult]:
        self.started_at = self.size
        for number, batch in enumerate(data.batches(batch_size=self.size)):
            if self.stop_after is not None and number == self.stop_after:
                raise KeyboardInterrupt
            self.computed.extend(batch.keys)
            if number == 1:
                self.size = 2
            topk = [[(gold + j) % len(task.classnames) for j in range(task.top_k)] for gold in batch.labels]
            yield ZeroShotBatchResult(keys=batch.keys, shards=batch.shards, golds=batch.labels, topk=topk)


def test_a_resumed_run_gets_back_what_its_backend_reported_at_the_last_commit(tmp_path: Path) -> None:
    first = ShrinkingBackend(stop_after=3)
    with pytest.raises(RunInterrupted):
        _run(tmp_path, first)
    (run_dir,) = (tmp_path / "out" / RUNS_DIR).iterdir()
    assert json.loads((run_dir / "run_info.json").read_text()) == {"batch_size": 2}

    second = ShrinkingBackend()
    rows = _run(tmp_path, second)
    assert second.resumed_from == {"batch_size": 2}
    assert second.started_at == 2  # the recorded size, not the requested 3
    manifest = json.loads((tmp_path / "out" / rows[0].output_file).with_suffix(".json").read_text())
    assert manifest["run_info"] == {"batch_size": 2}
    assert manifest["n_reused"] == len(first.computed)

    # A fresh run (--overwrite) forgets it with the chunks.
    third = ShrinkingBackend()
    options = RunOptions(output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", chunk_size=3, overwrite=True)
    execute(_planned(third), options, RunContext(cache_dir=tmp_path / "cache"), open_data=_open_data)
    assert third.resumed_from is None and third.started_at == 3
