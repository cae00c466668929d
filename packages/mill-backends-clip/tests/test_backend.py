"""ClipBackend against the reference protocol: clip_benchmark's own loader, classifier and classification."""

from __future__ import annotations

from collections.abc import Callable

import open_clip
import pytest
import torch
from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier
from clip_benchmark.models.open_clip import load_open_clip
from torch.utils.data import DataLoader, TensorDataset

from mill.backends.clip import TinyModel
from mill.backends.clip.backend import ClipBackend
from mill.core.kinds.zero_shot import ZeroShotTask
from mill.data import ShardDataset


def _topk_by_key(backend: ClipBackend, task: ZeroShotTask, dataset: ShardDataset) -> dict[str, list[int]]:
    return {
        key: list(top)
        for result in backend.run_zero_shot(task, dataset)
        for key, top in zip(result.keys, result.topk, strict=True)
    }


def test_matches_clip_benchmark_end_to_end(
    load_tiny: Callable[..., ClipBackend], tiny: TinyModel, task: ZeroShotTask, dataset: ShardDataset
) -> None:
    backend = load_tiny()
    # The reference builds its own model, transform and tokenizer the way clip_benchmark's CLI does.
    open_clip.add_model_config(tiny.config_path)
    ref_model, ref_transform, ref_tokenizer = load_open_clip(tiny.name, str(tiny.checkpoint_path), device="cpu")
    ref_model.eval()
    ref_classifier = zero_shot_classifier(
        ref_model, ref_tokenizer, list(task.classnames), list(task.templates), "cpu", amp=False
    )
    classifier = backend.classifier_for(task)
    assert classifier.dtype == torch.float32
    assert classifier.shape == ref_classifier.shape
    torch.testing.assert_close(classifier, ref_classifier, atol=1e-5, rtol=0)

    raw = [b for b in dataset.batches(batch_size=100)]  # PIL images, before any transform
    ref_images = torch.stack([ref_transform(image) for batch in raw for image in batch.images])
    labels = torch.tensor([label for batch in raw for label in batch.labels])
    loader = DataLoader(TensorDataset(ref_images, labels), batch_size=16)
    ref_logits, _ = run_classification(ref_model, ref_classifier, loader, "cpu", amp=False)

    mill_images = next(iter(dataset.batches(batch_size=100, transform=backend.preprocess))).images
    torch.testing.assert_close(mill_images, ref_images, atol=0, rtol=0)
    logits = backend.logits_for(mill_images, classifier)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=0)

    keys = [key for batch in raw for key in batch.keys]
    topk = _topk_by_key(backend, task, dataset)
    assert [topk[key] for key in keys] == ref_logits.topk(5, dim=-1).indices.tolist()
    assert [topk[key][0] for key in keys] == ref_logits.argmax(dim=-1).tolist()
    # Equality is only meaningful if the random model does not predict one class for everything.
    assert len({top[0] for top in topk.values()}) >= 5


def test_topk_independent_of_batch_size_and_workers(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset
) -> None:
    runs = {}
    for batch_size in (1, 7, 64):
        for workers in (0, 2):
            backend = load_tiny(batch_size=batch_size, num_workers=workers)
            runs[batch_size, workers] = _topk_by_key(backend, task, dataset)
    reference = runs[64, 0]
    assert len(reference) == len(dataset)
    for setting, topk in runs.items():
        assert topk == reference, f"top-k differ with batch_size, num_workers = {setting}"


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def start(self, phase: str, total: int | None = None) -> None:
        self.events.append(("start", (phase, total)))

    def advance(self, n: int = 1) -> None:
        self.events.append(("advance", n))

    def finish(self) -> None:
        self.events.append(("finish", None))


def test_progress_phases(load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset) -> None:
    recorder = _Recorder()
    backend = load_tiny(batch_size=20, progress=recorder)
    recorder.events.clear()  # drop the "loading model" phase
    results = list(backend.run_zero_shot(task, dataset))
    assert [len(r.keys) for r in results] == [20, 20, 20]
    starts = [e[1] for e in recorder.events if e[0] == "start"]
    assert starts == [("building classifier", None), ("evaluating", len(dataset))]
    assert [e[1] for e in recorder.events if e[0] == "advance"] == [20, 20, 20]
    assert recorder.events[-1] == ("finish", None)
    golds = [g for r in results for g in r.golds]
    assert golds == list(dataset.labels)
    assert all(len(top) == 5 for r in results for top in r.topk)


def test_top_k_is_capped_by_the_number_of_classes(load_tiny: Callable[..., ClipBackend], dataset: ShardDataset) -> None:
    task = ZeroShotTask(benchmark="b", variant="v", classnames=("cat", "dog", "fish"), templates=("a {c}",))
    results = list(load_tiny().run_zero_shot(task, dataset.subset(dataset.keys[:4])))
    assert [sorted(top) for r in results for top in r.topk] == [[0, 1, 2]] * 4


@pytest.mark.parametrize("precision", ["amp_bf16", "amp", "pure_bf16"])
def test_low_precisions_run_and_mostly_agree_with_fp32(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset, precision: str
) -> None:
    fp32 = _topk_by_key(load_tiny(), task, dataset)
    low = _topk_by_key(load_tiny(precision=precision), task, dataset)
    assert low.keys() == fp32.keys()
    agree = sum(low[k][0] == fp32[k][0] for k in fp32)
    assert agree >= 0.8 * len(fp32), f"{precision}: top-1 agrees with fp32 on {agree}/{len(fp32)} samples"
