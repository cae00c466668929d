from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mill.core.errors import DataError
from mill.data import index as index_module
from mill.data.index import index_shard, split_member_name
from mill.data.source import ShardInfo, local_shards


def _shard(path: Path) -> ShardInfo:
    return ShardInfo(name=f"test/{path.name}", path=path, size=path.stat().st_size)


def test_split_member_name_like_webdataset() -> None:
    assert split_member_name("s0000001.0.webp") == ("s0000001", "0.webp")
    assert split_member_name("dir.x/s1.cls") == ("dir.x/s1", "cls")
    assert split_member_name("README") is None


def test_index_lists_keys_members_and_labels(wds_dir: Path, cache_dir: Path) -> None:
    shard = local_shards(wds_dir, split="test")[0]
    index = index_shard(shard, label_member="cls", cache_dir=cache_dir)
    assert [s.key for s in index.samples] == [f"s{i:07d}" for i in range(17)]
    assert [s.label_text for s in index.samples[:6]] == ["0"] * 5 + ["1"]
    first = index.samples[0]
    assert set(first.members) == {"0.webp", "cls"}
    with open(shard.path, "rb") as f:
        f.seek(first.members["cls"].offset)
        assert f.read(first.members["cls"].size) == b"0"
        f.seek(first.members["0.webp"].offset)
        assert f.read(4) == b"RIFF"


def test_index_cache_is_reused_until_the_file_changes(
    wds_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = local_shards(wds_dir, split="test")[1]
    first = index_shard(shard, label_member="cls", cache_dir=cache_dir)
    scans: list[Any] = []
    real_scan = index_module._scan

    def counting_scan(*args: Any, **kwargs: Any) -> Any:
        scans.append(args)
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(index_module, "_scan", counting_scan)
    assert index_shard(shard, label_member="cls", cache_dir=cache_dir) == first
    assert scans == []
    stat = shard.path.stat()
    os.utime(shard.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        assert index_shard(shard, label_member="cls", cache_dir=cache_dir) == first
        assert len(scans) == 1
    finally:
        os.utime(shard.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("cut", ["half", "inside_header", "member_boundary"])
def test_truncated_tar_names_shard(wds_dir: Path, tmp_path: Path, cut: str) -> None:
    source = wds_dir / "test" / "0.tar"
    data = source.read_bytes()
    with tarfile.open(source) as tar:
        third = tar.getmembers()[2]  # its header starts where the second member's data ends (padded)
    length = {"half": len(data) // 2, "inside_header": third.offset + 100, "member_boundary": third.offset}[cut]
    path = tmp_path / "0.tar"
    path.write_bytes(data[:length])
    with pytest.raises(DataError, match=r"shard test/0\.tar .* truncated.*re-download"):
        index_shard(_shard(path), label_member="cls", cache_dir=tmp_path / "cache")


def test_corrupt_tar_names_shard(tmp_path: Path) -> None:
    path = tmp_path / "3.tar"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(DataError, match=r"shard test/3\.tar .* corrupt.*re-download"):
        index_shard(_shard(path), label_member="cls", cache_dir=tmp_path / "cache")


def test_repeated_member_and_key_are_errors(tmp_path: Path, write_tar: Any) -> None:
    twice = write_tar(tmp_path / "a.tar", [("k1.cls", b"1"), ("k1.cls", b"2")])
    with pytest.raises(DataError, match=r"shard test/a\.tar: sample 'k1' has two 'cls' members"):
        index_shard(_shard(twice), label_member="cls", cache_dir=tmp_path)
    apart = write_tar(tmp_path / "b.tar", [("k1.cls", b"1"), ("k2.cls", b"2"), ("k1.webp", b"")])
    with pytest.raises(DataError, match=r"shard test/b\.tar: sample 'k1' appears twice"):
        index_shard(_shard(apart), label_member="cls", cache_dir=tmp_path)


def test_oversized_label_is_an_error(tmp_path: Path, write_tar: Any) -> None:
    path = write_tar(tmp_path / "c.tar", [("k1.cls", b"7" * 1000)])
    with pytest.raises(DataError, match=r"shard test/c\.tar, sample 'k1': label member k1\.cls has 1000 bytes"):
        index_shard(_shard(path), label_member="cls", cache_dir=tmp_path)
