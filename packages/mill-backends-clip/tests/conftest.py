"""Shared fixtures: tiny random-weight open_clip models (CLIP and SigLIP-style) and synthetic shards, all written
on the fly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from mill.backends.clip import ClipArgs, TinyModel, write_tiny_model
from mill.backends.clip.backend import ClipBackend
from mill.backends.clip.tiny import write_tiny_siglip
from mill.core.backend import RunContext
from mill.core.kinds.zero_shot import ZeroShotTask
from mill.core.progress import Progress, SilentProgress
from mill.core.sample import ReadOptions
from mill.data import ShardDataset, open_dataset, synthetic_dataset_spec, write_synthetic_shards

# 30 classes x 2 images: with 10 x 5 the random-weight model's top-1 falls on only 4 classes, too few
# for the equivalence tests to compare predictions that vary (30 x 2 gives 9).
N_CLASSES = 30
PER_CLASS = 2
CLASSNAMES = tuple(IMAGENET_CLASSNAMES[:N_CLASSES])
TEMPLATES = ("a photo of a {c}.", "a bad photo of the {c}.", "itap of a {c}.")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SigLIP-style model folder in open_clip's Hub layout (config, safetensors, tokenizer files)."""
    return write_tiny_siglip(tmp_path_factory.mktemp("siglip") / "tiny-siglip")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> ShardDataset:
    root = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(root, n_classes=N_CLASSES, per_class=PER_CLASS, n_shards=3)
    return open_dataset(
        synthetic_dataset_spec(root, n_samples=N_CLASSES * PER_CLASS),
        n_classes=N_CLASSES,
        options=ReadOptions(cache_dir=tmp_path_factory.mktemp("data-cache")),
    )


@pytest.fixture
def task() -> ZeroShotTask:
    return ZeroShotTask(benchmark="synthetic", variant="default", classnames=CLASSNAMES, templates=TEMPLATES)


@pytest.fixture
def load_tiny(tiny: TinyModel, tmp_path: Path) -> Callable[..., ClipBackend]:
    """Load the tiny model on CPU in fp32 (overridable), caching under this test's tmp_path."""

    def load(cache_dir: Path = tmp_path / "cache", progress: Progress | None = None, **overrides: Any) -> ClipBackend:
        args = {
            "path": str(tiny.config_path),
            "pretrained": str(tiny.checkpoint_path),
            "precision": "fp32",
            "device": "cpu",
            "num_workers": 0,
            **overrides,
        }
        context = RunContext(cache_dir=cache_dir, progress=progress or SilentProgress())
        return ClipBackend.load(ClipArgs.from_mapping(args), context)

    return load
