from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

from mill.data import write_synthetic_shards


def test_output_is_deterministic(tmp_path: Path) -> None:
    first = write_synthetic_shards(tmp_path / "a", n_classes=4, per_class=3, n_shards=2, seed=3)
    second = write_synthetic_shards(tmp_path / "b", n_classes=4, per_class=3, n_shards=2, seed=3)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    other = write_synthetic_shards(tmp_path / "c", n_classes=4, per_class=3, n_shards=2, seed=4)
    assert first[0].read_bytes() != other[0].read_bytes()


def test_wds_imagenet1k_layout(tmp_path: Path) -> None:
    paths = write_synthetic_shards(tmp_path, n_classes=3, per_class=2, n_shards=2, mixed_modes=False)
    assert paths == [tmp_path / "test" / "0.tar", tmp_path / "test" / "1.tar"]
    with tarfile.open(paths[0]) as tar:
        assert tar.getnames() == [f"s000000{i}.{ext}" for i in range(3) for ext in ("0.webp", "cls")]
        assert tar.extractfile("s0000002.cls").read() == b"1"  # type: ignore[union-attr]
        assert {m.mtime for m in tar.getmembers()} == {0}
    assert not (tmp_path / "test" / "nshards.txt").exists()


def test_clip_benchmark_layout(tmp_path: Path) -> None:
    paths = write_synthetic_shards(
        tmp_path, n_classes=2, per_class=2, n_shards=2, split="val", layout="clip_benchmark", mixed_modes=False
    )
    assert (tmp_path / "val" / "nshards.txt").read_text().strip() == "2"
    with tarfile.open(paths[1]) as tar:
        assert tar.getnames() == ["s0000002.webp", "s0000002.cls", "s0000003.webp", "s0000003.cls"]


def test_classes_look_different_to_a_random_network(tmp_path: Path) -> None:
    # A randomly initialised model must spread its top-1 over many classes, or demo and benchmark runs
    # would show a degenerate accuracy that hides bugs in the label path.
    from mill.core.sample import ReadOptions
    from mill.data import open_dataset, synthetic_dataset_spec

    write_synthetic_shards(tmp_path, n_classes=50, per_class=1, n_shards=2, image_size=32)
    dataset = open_dataset(
        synthetic_dataset_spec(tmp_path, n_samples=50), n_classes=50, options=ReadOptions(cache_dir=tmp_path / "cache")
    )
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(50)
    )

    def to_tensor(image: object) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)

    with torch.no_grad():
        top1 = [net(b.images).argmax(1) for b in dataset.batches(batch_size=25, transform=to_tensor)]
    assert len(set(torch.cat(top1).tolist())) >= 5
