"""ClipBackend's retrieval answers: each image's and each caption's normalised embedding, as open_clip's towers
give them; captions kept with their image; non-finite features and caption-less data stopped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mill.backends.clip.backend import ClipBackend
from mill.core.errors import DataError, NonFiniteError
from mill.core.kinds.retrieval import RetrievalTask
from mill.core.sample import ReadOptions
from mill.core.spec import DatasetSpec
from mill.data import ShardDataset, open_dataset
from mill.data.synthetic import synthetic_image, write_caption_shards

N_IMAGES = 10
TASK = RetrievalTask("captions", "captions")


def _captions(index: int) -> list[str]:
    return [f"a picture of thing {index}, view {j}" for j in range(1 + index % 3)]


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory) -> ShardDataset:
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(0)
    samples = [(synthetic_image(i, n_classes=N_IMAGES, size=32, rng=rng), _captions(i)) for i in range(N_IMAGES)]
    write_caption_shards(root, samples, n_samples=N_IMAGES, n_shards=2)
    spec = DatasetSpec(source=str(root), split="test", image_member="webp", text_member="txt", n_samples=N_IMAGES)
    return open_dataset(spec, n_classes=0, options=ReadOptions())


def test_embeddings_are_the_towers_normalised(load_tiny: Callable[..., ClipBackend], captioned: ShardDataset) -> None:
    backend = load_tiny(batch_size=4, text_batch_size=3)
    results = list(backend.run_retrieval(TASK, captioned))
    assert [len(r.keys) for r in results] == [4, 4, 2]
    keys = [k for r in results for k in r.keys]
    assert keys == [f"s{i:07d}" for i in range(N_IMAGES)]
    assert [list(c) for r in results for c in r.captions] == [_captions(i) for i in range(N_IMAGES)]

    (batch,) = captioned.batches(batch_size=N_IMAGES, transform=backend.preprocess)
    with torch.no_grad():
        images = F.normalize(backend.model.encode_image(batch.images), dim=-1)
        texts = [
            F.normalize(backend.model.encode_text(backend.loaded.tokenizer(_captions(i))), dim=-1)
            for i in range(N_IMAGES)
        ]
    got_images = np.concatenate([r.image_embeddings for r in results])
    np.testing.assert_allclose(got_images, images.numpy(), atol=1e-5, rtol=0)
    got_texts = [t for r in results for t in r.text_embeddings]
    for got, expected in zip(got_texts, texts, strict=True):
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)
    assert np.linalg.norm(got_images, axis=1) == pytest.approx(np.ones(N_IMAGES), abs=1e-5)


def test_non_finite_caption_features_stop_the_run_naming_the_samples(
    load_tiny: Callable[..., ClipBackend], captioned: ShardDataset
) -> None:
    backend = load_tiny(batch_size=N_IMAGES)
    real = backend.model.encode_text

    def overflowing(tokens: torch.Tensor) -> Any:
        features = real(tokens)
        features[2] = float("nan")  # the third caption: sample 1's second (sample 0 has one caption)
        return features

    backend.model.encode_text = overflowing
    with pytest.raises(
        NonFiniteError,
        match=r"non-finite \(NaN or inf\) text features for 1 of 10 samples in a batch: "
        r"'s0000001' \(shard test/0.tar\);.*check these captions",
    ):
        next(backend.run_retrieval(TASK, captioned))


def test_data_without_captions_is_refused(load_tiny: Callable[..., ClipBackend], dataset: ShardDataset) -> None:
    with pytest.raises(DataError, match=r"benchmark 'captions': its samples hold no captions; .* dataset.text_member"):
        next(load_tiny().run_retrieval(TASK, dataset))
