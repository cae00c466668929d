"""Faults of the device: a batch that runs out of memory is retried at half its size, and image features that
are not finite stop the run naming the samples. Injected on CPU by replacing the image tower's forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from mill.backends.clip.backend import ClipBackend
from mill.core.errors import NonFiniteError, OutOfMemoryError
from mill.core.kinds.zero_shot import ZeroShotTask
from mill.data import ShardDataset


def _answers(backend: ClipBackend, task: ZeroShotTask, dataset: ShardDataset) -> list[tuple[str, list[int]]]:
    return [
        (key, list(top))
        for result in backend.run_zero_shot(task, dataset)
        for key, top in zip(result.keys, result.topk, strict=True)
    ]


class _Tower:
    """Stands in for ``model.encode_image``: runs out of memory on batches above ``limit`` and records the
    size of every batch it computed."""

    def __init__(self, real: Callable[[torch.Tensor], torch.Tensor], limit: int, error: Callable[[], Exception]):
        self.real = real
        self.limit = limit
        self.error = error
        self.computed: list[int] = []
        self.refused: list[int] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if len(images) > self.limit:
            self.refused.append(len(images))
            raise self.error()
        self.computed.append(len(images))
        return self.real(images)


@pytest.mark.parametrize(
    "error",
    [
        lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        lambda: RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"),
    ],
    ids=["OutOfMemoryError", "RuntimeError"],
)
def test_a_batch_that_runs_out_of_memory_is_retried_at_half_size_and_the_run_goes_on_there(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset, error: Callable[[], Exception]
) -> None:
    reference = _answers(load_tiny(batch_size=16), task, dataset)
    backend = load_tiny(batch_size=16)
    tower = _Tower(backend.model.encode_image, limit=5, error=error)
    backend.model.encode_image = tower
    answers = _answers(backend, task, dataset)
    # Same samples, same order, same classes: nothing lost, nothing computed twice.
    assert answers == reference
    assert sum(tower.computed) == len(dataset) == 60
    assert tower.refused == [16, 8]  # then every batch at 4: the run went on at the smaller size
    assert set(tower.computed) == {4}
    info = backend.run_info()
    assert info["batch_size"] == 4
    assert info["out_of_memory_fallbacks"] == [{"from": 16, "to": 8}, {"from": 8, "to": 4}]
    # Which batch size produced each sample (under bf16 autocast that can change a result): all at 4 here.
    assert backend.batch_sizes([key for key, _ in answers]) == [4] * 60


def test_a_resumed_backend_starts_at_the_recorded_size(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset
) -> None:
    backend = load_tiny(batch_size=16)
    backend.resume(
        {
            "batch_size": 4,
            "out_of_memory_fallbacks": [{"from": 16, "to": 8}, {"from": 8, "to": 4}],
        }
    )
    tower = _Tower(backend.model.encode_image, limit=4, error=lambda: torch.OutOfMemoryError("out of memory"))
    backend.model.encode_image = tower
    answers = _answers(backend, task, dataset)
    assert len(answers) == 60
    assert tower.refused == [] and set(tower.computed) == {4}
    assert backend.batch_sizes([key for key, _ in answers]) == [4] * 60
    assert backend.run_info()["out_of_memory_fallbacks"] == [{"from": 16, "to": 8}, {"from": 8, "to": 4}]
    # A record without fall-backs leaves the requested size alone.
    fresh = load_tiny(batch_size=16)
    fresh.resume({"batch_size": 64, "out_of_memory_fallbacks": []})
    assert fresh.run_info()["batch_size"] == 16


def test_out_of_memory_at_one_sample_is_a_mill_error(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset
) -> None:
    backend = load_tiny(batch_size=4)
    backend.model.encode_image = _Tower(
        backend.model.encode_image, limit=0, error=lambda: torch.OutOfMemoryError("CUDA out of memory")
    )
    with pytest.raises(OutOfMemoryError, match=r"out of memory computing one sample \(shard test/0.tar, sample "):
        _answers(backend, task, dataset)


def test_an_error_that_is_not_out_of_memory_is_not_retried(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset
) -> None:
    backend = load_tiny(batch_size=4)
    tower = _Tower(backend.model.encode_image, limit=0, error=lambda: RuntimeError("shape mismatch"))
    backend.model.encode_image = tower
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _answers(backend, task, dataset)
    assert tower.refused == [4]


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_image_features_stop_the_run_naming_the_samples(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset, value: float
) -> None:
    order = [key for key, _ in _answers(load_tiny(batch_size=8), task, dataset)]
    backend = load_tiny(batch_size=8)
    real = backend.model.encode_image
    calls = []

    def overflowing(images: torch.Tensor) -> Any:
        calls.append(len(images))
        features = real(images)
        if len(calls) == 2:  # the second batch: its samples 1 and 6 overflow (as float16 can)
            features[1, 0] = value
            features[6] = value
        return features

    backend.model.encode_image = overflowing
    results = backend.run_zero_shot(task, dataset)
    first = next(results)  # the first batch is good and comes out
    assert list(first.keys) == order[:8]
    with pytest.raises(NonFiniteError) as raised:
        next(results)
    message = str(raised.value)
    assert f"2 of 8 samples in a batch: {order[9]!r} (shard test/0.tar), {order[14]!r} (shard test/0.tar)" in message
    assert "precision=fp32" in message
