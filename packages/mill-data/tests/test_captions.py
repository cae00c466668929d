"""Datasets whose samples hold captions (clip_benchmark's retrieval exports): read with the image, one caption
per line, no class label; a missing, empty or undecodable caption member named by shard and sample."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mill.core.errors import DataError
from mill.core.sample import NO_LABEL, ReadOptions
from mill.core.spec import DatasetSpec
from mill.data import ShardDataset, open_dataset
from mill.data.synthetic import synthetic_image, write_caption_shards

CAPTIONS = [["a red circle", "a round red thing"], ["one line only"], ["three", "captions", "here"], ["x", "y"]]


def _open(root: Path, n_samples: int, **options: Any) -> ShardDataset:
    spec = DatasetSpec(source=str(root), split="test", image_member="webp", text_member="txt", n_samples=n_samples)
    return open_dataset(spec, n_classes=0, options=ReadOptions(**options))


@pytest.fixture
def export(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    images = [synthetic_image(i, n_classes=4, size=16, rng=rng) for i in range(len(CAPTIONS))]
    write_caption_shards(tmp_path, zip(images, CAPTIONS, strict=True), n_samples=len(CAPTIONS), n_shards=2)
    return tmp_path


@pytest.mark.parametrize("num_workers", [0, 2])
def test_captions_arrive_with_their_images_and_no_label(export: Path, num_workers: int) -> None:
    batches = list(_open(export, len(CAPTIONS)).batches(batch_size=3, num_workers=num_workers))
    assert [list(t) for b in batches for t in (b.texts or [])] == CAPTIONS
    assert [k for b in batches for k in b.keys] == [f"s{i:07d}" for i in range(len(CAPTIONS))]
    assert {label for b in batches for label in b.labels} == {NO_LABEL}
    assert all(len(b.images) == len(b.keys) for b in batches)


def test_export_layout_is_clip_benchmarks(export: Path) -> None:
    assert (export / "dataset_type.txt").read_text() == "retrieval\n"
    assert (export / "test" / "nshards.txt").read_text() == "2\n"
    with tarfile.open(export / "test" / "0.tar") as tar:
        names = tar.getnames()
        text = tar.extractfile("s0000000.txt").read()  # type: ignore[union-attr]
    assert names == ["s0000000.webp", "s0000000.txt", "s0000001.webp", "s0000001.txt"]
    assert text == b"a red circle\na round red thing"


def test_a_newline_inside_a_caption_is_written_escaped(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8))
    write_caption_shards(tmp_path, [(image, ["two\nlines", "plain"])], n_samples=1, n_shards=1)
    (batch,) = _open(tmp_path, 1).batches(batch_size=1)
    assert batch.texts == [("two\\nlines", "plain")]


def test_a_sample_without_its_caption_member_is_named(tmp_path: Path, write_tar: Any, webp_bytes: bytes) -> None:
    write_tar(tmp_path / "test" / "0.tar", [("a.webp", webp_bytes), ("a.cls", b"1")])
    with pytest.raises(DataError, match=r"shard test/0\.tar, sample 'a' has no 'txt' captions member .* text_member"):
        _open(tmp_path, 1)


@pytest.mark.parametrize(("text", "why"), [(b"", "holds no caption"), (b"\xff\xfe", "is not UTF-8")])
def test_an_empty_or_undecodable_caption_member_fails_or_is_skipped(
    tmp_path: Path, write_tar: Any, webp_bytes: bytes, text: bytes, why: str
) -> None:
    write_tar(
        tmp_path / "test" / "0.tar",
        [("a.webp", webp_bytes), ("a.txt", b"fine"), ("b.webp", webp_bytes), ("b.txt", text)],
    )
    with pytest.raises(DataError, match=rf"^shard test/0\.tar, sample 'b': cannot decode the captions \(.*{why}"):
        list(_open(tmp_path, 2).batches(batch_size=2))
    skipping = _open(tmp_path, 2, on_bad_sample="skip")
    assert [t for b in skipping.batches(batch_size=2) for t in (b.texts or [])] == [("fine",)]
    assert [s.key for s in skipping.skipped] == ["b"]
