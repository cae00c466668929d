from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mill.core.errors import DataError
from mill.core.sample import SampleBatch, SampleSource
from mill.data import ShardDataset
from mill.data.dataset import spread_indices
from mill.data.samples import to_rgb


def _all_samples(dataset: ShardDataset, **kwargs: Any) -> list[tuple[str, int]]:
    return [(k, lab) for b in dataset.batches(**kwargs) for k, lab in zip(b.keys, b.labels, strict=True)]


def _to_tensor(image: Image.Image) -> torch.Tensor:
    assert image.mode == "RGB"
    return torch.from_numpy(np.asarray(image.resize((16, 16)), dtype=np.float32)).permute(2, 0, 1)


def test_opens_wds_layout(shape: Any, wds_dir: Path, open_wds: Any) -> None:
    dataset = open_wds(wds_dir)
    source: SampleSource = dataset  # mypy checks ShardDataset against the protocol here
    assert len(source) == shape.total
    assert list(dataset.keys) == [f"s{i:07d}" for i in range(shape.total)]
    assert list(dataset.labels) == [i // shape.per_class for i in range(shape.total)]
    assert [s.name for s in dataset.shards] == ["test/0.tar", "test/1.tar", "test/2.tar"]
    assert not dataset.incomplete and dataset.limit is None


def test_opens_clip_benchmark_layout(shape: Any, clip_dir: Path, open_wds: Any) -> None:
    dataset = open_wds(clip_dir, image_member="webp")
    assert list(dataset.labels) == [i // shape.per_class for i in range(shape.total)]
    batch = next(dataset.batches(batch_size=4))
    assert batch.shards == ["test/0.tar"] * 4


def test_image_found_by_extension_when_name_differs(shape: Any, wds_dir: Path, open_wds: Any) -> None:
    # The synthetic data stores greyscale / palette samples as "0.png", so both paths are exercised here.
    dataset = open_wds(wds_dir, image_member="jpg")
    assert len(dataset) == shape.total
    assert len(_all_samples(dataset, batch_size=64)) == shape.total


def test_greyscale_and_palette_images_arrive_as_rgb(shape: Any, wds_dir: Path, open_wds: Any) -> None:
    with tarfile.open(wds_dir / "test" / "0.tar") as tar:
        modes = {
            Image.open(io.BytesIO(tar.extractfile(m).read())).mode  # type: ignore[union-attr]
            for m in tar.getmembers()
            if not m.name.endswith(".cls")
        }
    assert {"L", "P", "RGB"} <= modes
    images = [im for b in open_wds(wds_dir).batches(batch_size=64) for im in b.images]
    assert len(images) == shape.total
    assert {im.mode for im in images} == {"RGB"}


def test_to_rgb_handles_alpha_and_transparent_palette() -> None:
    rgba = Image.new("RGBA", (4, 4), (1, 2, 3, 0))
    palette = Image.new("P", (4, 4))
    palette.info["transparency"] = 0
    assert to_rgb(rgba).mode == to_rgb(palette).mode == to_rgb(Image.new("LA", (4, 4))).mode == "RGB"


def test_incomplete_dataset_is_an_error_unless_allowed(shape: Any, wds_dir: Path, open_wds: Any) -> None:
    with pytest.raises(DataError) as caught:
        open_wds(wds_dir, expected_count=60)
    message = str(caught.value)
    for part in ("found 50 samples", "expected 60", "test/0.tar, test/1.tar, test/2.tar", "--allow_incomplete"):
        assert part in message
    dataset = open_wds(wds_dir, expected_count=60, allow_incomplete=True)
    assert dataset.incomplete and len(dataset) == shape.total


def test_missing_shard_makes_dataset_incomplete(wds_dir: Path, tmp_path: Path, open_wds: Any) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(wds_dir, partial)
    (partial / "test" / "1.tar").unlink()
    with pytest.raises(DataError, match="found 34 samples in 2 shard"):
        open_wds(partial)


def test_limit_is_spread_over_all_shards_and_deterministic(shape: Any, wds_dir: Path, open_wds: Any) -> None:
    dataset = open_wds(wds_dir, limit=10)
    assert dataset.limit == 10 and len(dataset) == 10
    assert {s.shard for s in dataset.samples} == {"test/0.tar", "test/1.tar", "test/2.tar"}
    assert len(set(dataset.labels)) == shape.n_classes
    assert open_wds(wds_dir, limit=10).keys == dataset.keys
    assert len(open_wds(wds_dir, limit=1000)) == shape.total


def test_limit_skips_the_completeness_check(wds_dir: Path, open_wds: Any) -> None:
    dataset = open_wds(wds_dir, limit=5, expected_count=60)
    assert dataset.incomplete and len(dataset) == 5


def test_spread_indices() -> None:
    assert spread_indices(10, 3) == [0, 3, 6]
    assert spread_indices(3, 5) == [0, 1, 2]
    assert len(set(spread_indices(50_000, 1000))) == 1000


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_every_sample_exactly_once(wds_dir: Path, open_wds: Any, batch_size: int, num_workers: int) -> None:
    dataset = open_wds(wds_dir)
    seen = _all_samples(dataset, batch_size=batch_size, num_workers=num_workers)
    assert sorted(seen) == list(zip(dataset.keys, dataset.labels, strict=True))


def test_workers_split_within_shards(wds_dir: Path, open_wds: Any) -> None:
    # One shard, two workers: both must get work, so the first two batches come from different halves.
    dataset = open_wds(wds_dir).subset([f"s{i:07d}" for i in range(17)])
    batches = list(dataset.batches(batch_size=4, num_workers=2))
    assert batches[0].keys[0] == "s0000000" and batches[1].keys[0] == "s0000008"


def test_tensor_transform_is_stacked(shape: Any, wds_dir: Path, open_wds: Any) -> None:
    batches = list(open_wds(wds_dir).batches(batch_size=7, num_workers=2, transform=_to_tensor))
    assert all(isinstance(b, SampleBatch) for b in batches)
    assert batches[0].images.shape == (7, 3, 16, 16)
    assert sum(len(b.keys) for b in batches) == shape.total


def test_subset_keeps_index_order(wds_dir: Path, open_wds: Any) -> None:
    dataset = open_wds(wds_dir)
    subset = dataset.subset(["s0000040", "s0000003", "missing"])
    assert subset.keys == ("s0000003", "s0000040")
    assert [b.keys for b in subset.batches(batch_size=8)] == [["s0000003", "s0000040"]]


def test_label_out_of_range_names_shard_and_key(wds_dir: Path, open_wds: Any) -> None:
    with pytest.raises(DataError, match=r"shard test/1\.tar, sample 's0000025': label 5 is outside \[0, 5\)"):
        open_wds(wds_dir, n_classes=5)


def test_non_integer_label(tmp_path: Path, write_tar: Any, webp_bytes: bytes, open_wds: Any) -> None:
    write_tar(tmp_path / "test" / "0.tar", [("a.0.webp", webp_bytes), ("a.cls", b"cat")])
    with pytest.raises(DataError, match=r"shard test/0\.tar, sample 'a': label 'cat' is not an integer"):
        open_wds(tmp_path, expected_count=None)


def test_missing_image_member(tmp_path: Path, write_tar: Any, open_wds: Any) -> None:
    write_tar(tmp_path / "test" / "0.tar", [("a.txt", b"hello"), ("a.cls", b"1")])
    with pytest.raises(DataError, match=r"shard test/0\.tar, sample 'a' has no image member"):
        open_wds(tmp_path, expected_count=None)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_undecodable_image_names_shard_and_key(
    tmp_path: Path, write_tar: Any, webp_bytes: bytes, open_wds: Any, num_workers: int
) -> None:
    write_tar(
        tmp_path / "test" / "0.tar",
        [("a.0.webp", webp_bytes), ("a.cls", b"1"), ("b.0.webp", b"not an image"), ("b.cls", b"2")],
    )
    dataset = open_wds(tmp_path, expected_count=2)
    with pytest.raises(DataError, match=r"^shard test/0\.tar, sample 'b': cannot decode the image"):
        _all_samples(dataset, batch_size=1, num_workers=num_workers)
    skipping = open_wds(tmp_path, expected_count=2, on_bad_sample="skip")
    assert _all_samples(skipping, batch_size=2, num_workers=num_workers) == [("a", 1)]
    assert [(s.key, s.shard) for s in skipping.skipped] == [("b", "test/0.tar")]


def test_duplicate_key_across_shards_names_both(wds_dir: Path, tmp_path: Path, open_wds: Any) -> None:
    copy = tmp_path / "dup"
    shutil.copytree(wds_dir, copy)
    shutil.copy(copy / "test" / "0.tar", copy / "test" / "3.tar")
    with pytest.raises(DataError, match=r"'s0000000' appears in shard test/0\.tar and in shard test/3\.tar"):
        open_wds(copy)


def test_second_open_reads_the_index_cache(wds_dir: Path, open_wds: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    first = open_wds(wds_dir)

    def no_tar(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the shard was re-read instead of using the cached index")

    monkeypatch.setattr(tarfile, "open", no_tar)
    assert open_wds(wds_dir).samples == first.samples


def test_http_source_end_to_end(clip_dir: Path, serve: Any, open_wds: Any) -> None:
    dataset = open_wds(serve(clip_dir), image_member="webp", limit=6)
    assert len(_all_samples(dataset, batch_size=4)) == 6
