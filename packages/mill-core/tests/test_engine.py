"""The engine end to end without torch: a fake backend and an in-memory dataset through plan, chunked
commits, an interruption, resume, scoring, the per-sample file, the manifest and the aggregate rows."""

from __future__ import annotations

import errno
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from attrs import evolve, field, frozen
from polars.testing import assert_frame_equal

from mill.core.backend import Capabilities, ModelInfo, RunContext
from mill.core.checksum import MANIFEST_HASH_KEY, manifest_digest, sidecar_path
from mill.core.chunks import RUNS_DIR
from mill.core.engine import PlannedRun, RunInterrupted, RunOptions, execute, load_backend, pick_variant
from mill.core.errors import BackendArgumentError, DamagedResultsError, MillWarning, ResultsError
from mill.core.kinds import generative_mcq, likelihood_mcq, zero_shot
from mill.core.kinds.generative_mcq import McqVariant, UnparsedPolicy
from mill.core.kinds.likelihood_mcq import LikelihoodMcqBatchResult, LikelihoodMcqTask, LikelihoodMcqVariant
from mill.core.kinds.zero_shot import ZeroShotBatchResult, ZeroShotTask
from mill.core.model_spec import parse_model_spec
from mill.core.plugins import LoadedPlugin, ResolvedModel
from mill.core.results import read_aggregate
from mill.core.sample import ReadOptions, SampleBatch
from mill.core.spec import DatasetSpec, Spec
from mill.core.task_kind import get_kind
from mill.core.verify import Status, rebuild, verify

N_CLASSES = 4
KEYS = [f"s{i:03d}" for i in range(10)]
LABELS = [i % N_CLASSES for i in range(10)]


@frozen
class Shard:
    name: str
    size: int
    sha256: str | None = None
    version: str | None = None


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
    context = RunContext(cache_dir=tmp_path / "cache")
    result = execute(_planned(backend, spec), options, context, open_data=_open_data)
    assert result is not None
    return result.rows


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
    # Zero-shot grading has no versioned rules; the variant is recorded as scored (for `mill rescore`).
    assert manifest["scorer_version"] is None and aggregate["scorer_version"].is_null().all()
    assert manifest["variant_config"] == {"kind": "zero_shot", "metric": "acc", "top_k": 2}


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


def test_without_an_output_directory_nothing_is_written(tmp_path: Path) -> None:
    options = RunOptions(output_dir=None, cache_dir=None, chunk_size=3)
    result = execute(_planned(FakeZeroShotBackend(shift=0)), options, RunContext(cache_dir=None), open_data=_open_data)
    assert result is not None and result.per_sample_file is None
    assert result.metrics["acc"].value == 1.0 and result.samples["key"].to_list() == KEYS
    assert result.manifest["run_dir"] is None and result.rows[0].output_file == ""
    assert list(tmp_path.iterdir()) == []


def _reference(tmp_path: Path) -> pl.DataFrame:
    rows = _run(tmp_path / "reference", FakeZeroShotBackend())
    return pl.read_parquet(tmp_path / "reference" / "out" / rows[0].output_file)


def _chunks(out: Path) -> list[Path]:
    (run_dir,) = (out / RUNS_DIR).iterdir()
    return sorted(run_dir.glob("chunk-*.parquet"))


def test_damaged_chunks_are_set_aside_and_recomputed(tmp_path: Path) -> None:
    reference = _reference(tmp_path)
    out = tmp_path / "out"
    _run(tmp_path, FakeZeroShotBackend())
    corrupt, truncated, unsigned, whole = _chunks(out)
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-20])
    sidecar_path(unsigned).unlink()

    again = FakeZeroShotBackend()
    with pytest.warns(MillWarning) as warned:
        rows = _run(tmp_path, again)
    messages = sorted(str(w.message) for w in warned)
    assert [m.split(" is damaged")[0] for m in messages] == [str(corrupt), str(truncated), str(unsigned)]
    assert "checksum" in messages[0] and "sha256 is missing" in messages[2]
    assert again.computed == KEYS[:9]  # the three damaged chunks' samples, and only those
    damaged = corrupt.parent / "damaged"
    assert sorted(p.name for p in damaged.iterdir()) == [
        "chunk-00000.parquet", "chunk-00000.parquet.sha256", "chunk-00001.parquet",
        "chunk-00001.parquet.sha256", "chunk-00002.parquet",
    ]  # fmt: skip
    assert whole.exists()
    assert_frame_equal(pl.read_parquet(out / rows[0].output_file), reference)
    manifest = json.loads((out / rows[0].output_file).with_suffix(".json").read_text())
    assert manifest["n_reused"] == 1


@pytest.mark.parametrize(
    ("failing", "committed"),
    [
        ("chunk-00002.parquet", 6),
        ("chunk-00001.parquet.sha256", 3),  # the chunk whose checksum cannot be written is taken back
        ("fake_0shot.parquet", 10),
        ("fake_0shot.json", 10),
        ("aggregate.csv.sha256", 10),
    ],
)
def test_a_full_disk_ends_the_run_and_the_same_command_completes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, committed: int
) -> None:
    reference = _reference(tmp_path)
    out = tmp_path / "out"
    real_fsync = os.fsync

    def disk_full_for(fd: int) -> None:
        # atomic_path fsyncs every file before renaming it: the write call that meets the full disk.
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{failing}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full_for)
        with pytest.raises(ResultsError) as raised:
            _run(tmp_path, FakeZeroShotBackend())
    message = str(raised.value)
    assert re.search(rf"cannot write \S*/{re.escape(failing)} \(No space left on device\); {committed} of 10", message)
    assert "re-run the same command to continue" in message
    assert not [p for p in out.rglob("*.tmp")]
    again = FakeZeroShotBackend()
    rows = _run(tmp_path, again)
    assert again.computed == KEYS[committed:]
    assert_frame_equal(pl.read_parquet(out / rows[0].output_file), reference)
    assert [check.status for check in verify(out)] == [Status.VERIFIED] * 3


def test_a_damaged_aggregate_is_never_overwritten_and_rebuilds_from_the_manifests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _run(tmp_path, FakeZeroShotBackend())
    aggregate = out / "aggregate.csv"
    damaged = aggregate.read_bytes()[:-30]
    aggregate.write_bytes(damaged)
    options = RunOptions(output_dir=out, cache_dir=tmp_path / "cache", seed=3)
    with pytest.raises(DamagedResultsError, match=r"not added to aggregate\.csv: .*aggregate\.csv is damaged"):
        execute(_planned(FakeZeroShotBackend()), options, RunContext(cache_dir=tmp_path), open_data=_open_data)
    assert aggregate.read_bytes() == damaged
    seeded = out / first[0].output_file.replace("_0shot_", "_0shot_seed3_")
    assert seeded.exists() and seeded.with_suffix(".json").exists()
    with pytest.raises(DamagedResultsError, match="verify --rebuild"):
        verify(out)

    rebuilt = rebuild(out)
    assert rebuilt.previous is not None and rebuilt.previous.read_bytes() == damaged
    assert (rebuilt.n_rows, rebuilt.left_out) == (6, [])
    frame = read_aggregate(out)
    assert sorted(set(frame["seed"].to_list())) == [3, 7]
    assert [check.status for check in verify(out)] == [Status.VERIFIED] * 6


def test_a_manifest_with_a_seed_no_aggregate_can_hold_is_left_out_of_a_rebuild(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rows = _run(tmp_path, FakeZeroShotBackend())
    manifest_file = (out / rows[0].output_file).with_suffix(".json")
    manifest = json.loads(manifest_file.read_text())
    manifest["seed"] = 2**63  # as an older Mill wrote it, before seeds were range-checked
    manifest[MANIFEST_HASH_KEY] = manifest_digest(manifest)
    manifest_file.write_text(json.dumps(manifest))
    rebuilt = rebuild(out)
    ((left_out, why),) = rebuilt.left_out
    assert left_out == manifest_file and "expected an integer in [0, 2^63)" in why
    assert rebuilt.n_rows == 0 and read_aggregate(out).is_empty()


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


def test_a_full_disk_while_recording_run_info_ends_the_run_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mill.core.chunks as chunks

    real = chunks.write_json_atomic

    def full(target: Path, data: Mapping[str, Any]) -> None:
        if target.name == "run_info.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        real(target, data)

    monkeypatch.setattr(chunks, "write_json_atomic", full)
    with pytest.raises(ResultsError, match=r"cannot write \S+/run_info\.json \(No space left on device\); \d+ of 10"):
        _run(tmp_path, ShrinkingBackend())


# --- A second kind through the same engine: letter likelihood, next to a generative variant ---------------

PROMPT = "Which one?\n{options}\nAnswer with the letter."
GENERATIVE = McqVariant("generative_mcq", "fake_mcq_acc", 3, PROMPT, 8, UnparsedPolicy.WRONG)
LIKELIHOOD = LikelihoodMcqVariant("likelihood_mcq", "fake_mcq_likelihood_acc", 3, PROMPT)


def _mcq_spec() -> Spec:
    base = _spec()
    return evolve(base, variants={**base.variants, "fake_mcq": GENERATIVE, "fake_mcq_likelihood": LIKELIHOOD})


class FakeLetterBackend:
    """Gives the gold letter probability 0.5 on even keys and the letter after it 0.5 on odd ones; the other
    letters 0.1 each, so the letters hold 0.5 + 0.1 * (n - 1) of the vocabulary."""

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(identity="fake/vlm", settings={"dtype": "float32"}, resolved_args={"path": "fake"})

    def run_info(self) -> Mapping[str, Any]:
        return {}

    def run_likelihood_mcq(self, task: LikelihoodMcqTask, data: Any) -> Iterator[LikelihoodMcqBatchResult]:
        for batch in data.batches(batch_size=4):
            rows = []
            for key, gold in zip(batch.keys, batch.labels, strict=True):
                question = task.question(key, gold)
                favoured = (question.letters.index(question.gold_letter) + int(key[-1]) % 2) % len(task.letters)
                rows.append([math.log(0.5 if i == favoured else 0.1) for i in range(len(task.letters))])
            yield LikelihoodMcqBatchResult(
                keys=batch.keys,
                shards=batch.shards,
                golds=batch.labels,
                prompts=[task.question(k, g).prompt for k, g in zip(batch.keys, batch.labels, strict=True)],
                letter_logprobs=rows,
                letter_mass=[0.5 + 0.1 * (len(task.letters) - 1)] * len(rows),
            )


def _run_letters(tmp_path: Path, *, rolls_up: bool) -> Any:
    spec = _mcq_spec()
    model = ResolvedModel("fake", {"path": "fake"}, parse_model_spec("fake[path=fake]"))
    plugin = LoadedPlugin("fake", FakePlugin(FakeLetterBackend()), "mill-fake")
    planned = PlannedRun(
        model, plugin, spec, "fake_mcq_likelihood", LIKELIHOOD, get_kind("likelihood_mcq"), rolls_up=rolls_up
    )
    options = RunOptions(output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", chunk_size=3)
    result = execute(planned, options, RunContext(cache_dir=tmp_path / "cache"), open_data=_open_data)
    assert result is not None
    return result.rows


def test_a_vlm_gets_the_generative_variant_unless_it_names_the_likelihood_one() -> None:
    vlm = Capabilities(kinds=frozenset({generative_mcq.NAME, likelihood_mcq.NAME}))
    assert pick_variant(_mcq_spec(), None, vlm, "vlm") == "fake_mcq"
    assert pick_variant(_mcq_spec(), "fake_mcq_likelihood", vlm, "vlm") == "fake_mcq_likelihood"


def test_likelihood_run_grades_the_likeliest_letter_and_keeps_out_of_the_rollup(tmp_path: Path) -> None:
    rows = _run_letters(tmp_path, rolls_up=False)
    found = {(row.task, row.metric): row.performance for row in rows}
    assert found == {
        ("fake_mcq_likelihood", "fake_mcq_likelihood_acc"): 0.5,
        ("fake_mcq_likelihood", "letter_mass"): 0.7,
    }
    assert {row.task_type for row in rows} == {"likelihood_mcq"}
    assert set(read_aggregate(tmp_path / "out")["task"]) == {"fake_mcq_likelihood"}
    frame = pl.read_parquet(tmp_path / "out" / rows[0].output_file)
    assert frame.columns == list(likelihood_mcq.OUTPUT_SCHEMA)
    question = likelihood_mcq.kind.build_task(_mcq_spec(), "fake_mcq_likelihood", LIKELIHOOD, 7).question
    for row in frame.iter_rows(named=True):
        asked = question(row["key"], row["gold"])
        assert (row["prompt"], row["gold_letter"]) == (asked.prompt, asked.gold_letter)
        assert row["options"] == [f"class {i}" for i in asked.option_indices]
        assert row["correct"] == (int(row["key"][-1]) % 2 == 0) == (row["prediction"] == row["gold_letter"])
        assert row["letter_mass"] == pytest.approx(0.7)


def test_the_default_variant_rolls_up(tmp_path: Path) -> None:
    rows = _run_letters(tmp_path, rolls_up=True)
    assert ("fake", "acc") in {(row.task, row.metric) for row in rows}
