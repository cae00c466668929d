"""Fixtures of the classifier backends' tests: tiny random-weight classifiers of each family
(:mod:`mill.backends.classifiers.tiny`) and ImageNet-labelled images written as shards, on the fly."""

from __future__ import annotations

import os

# Tests never reach a model hub: set before huggingface_hub reads it at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mill.backends.classifiers.tiny import (
    write_timm_checkpoint,
    write_torchvision_checkpoint,
    write_transformers_classifier,
)
from mill.data.synthetic import Layout, synthetic_image, write_image_shards

#: ImageNet-1k classes of the fixtures' images, spread over the first hundred.
CLASSES = (1, 6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94, 96, 97)

Images = Callable[[Sequence[int]], list[tuple[int, Image.Image]]]


@pytest.fixture(scope="session")
def labelled_images() -> Images:
    """``labelled_images(classes)``: two synthetic RGB images per class, labelled by the class, in class order."""

    def draw(classes: Sequence[int] = CLASSES) -> list[tuple[int, Image.Image]]:
        rng = np.random.default_rng(0)
        return [
            (label, synthetic_image(position, n_classes=len(classes), size=96, rng=rng))
            for position, label in enumerate(classes)
            for _ in range(2)
        ]

    return draw


@pytest.fixture(scope="session")
def write_shards() -> Callable[..., Path]:
    """``write_shards(root, samples, layout)``: (label, image) pairs as two shards in an export's layout."""

    def write(root: Path, samples: Sequence[tuple[int, Image.Image]], layout: Layout = "wds_imagenet1k") -> Path:
        write_image_shards(root, samples, n_samples=len(samples), n_shards=2, layout=layout)
        return root

    return write


@pytest.fixture(scope="session")
def timm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_timm_checkpoint(tmp_path_factory.mktemp("timm") / "tiny-resnet.pth")


@pytest.fixture(scope="session")
def torchvision_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_torchvision_checkpoint(tmp_path_factory.mktemp("torchvision") / "mobilenet.pth")


@pytest.fixture(scope="session")
def transformers_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_transformers_classifier(tmp_path_factory.mktemp("hf") / "tiny-vit")


@pytest.fixture(scope="session")
def imagenet_shards(
    tmp_path_factory: pytest.TempPathFactory, labelled_images: Images, write_shards: Callable[..., Path]
) -> Path:
    return write_shards(tmp_path_factory.mktemp("imagenet"), labelled_images(CLASSES))
