"""Reading images back by key from a local shard, and refusing anything that is not local."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from mill.data import write_synthetic_shards
from mill.data.lookup import local_shard, read_images


def test_read_images_returns_the_keys_asked_for(tmp_path: Path) -> None:
    write_synthetic_shards(tmp_path, n_classes=3, per_class=2, n_shards=1)
    shard = local_shard(str(tmp_path), "test/0.tar")
    assert shard is not None
    found = read_images(shard, ["s0000001", "s0000004", "missing"])
    assert sorted(found) == ["s0000001", "s0000004"]
    with Image.open(io.BytesIO(found["s0000001"])) as image:
        assert image.width > 0


def test_local_shard_is_none_for_remote_or_absent_shards(tmp_path: Path) -> None:
    assert local_shard("https://example.org/data", "test/0.tar") is None
    assert local_shard(str(tmp_path), "test/0.tar") is None
