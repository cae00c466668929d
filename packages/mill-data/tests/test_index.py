from __future__ import annotations

import errno
import json
import os
import stat
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


def test_a_shard_rewritten_with_its_size_and_mtime_kept_is_indexed_again(
    tmp_path: Path, write_tar: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `cp -p` of another shard of the same size: the cached index (offsets, labels) would be stale.
    shard_path = tmp_path / "test" / "0.tar"
    shard_path.parent.mkdir()
    write_tar(shard_path, [("s0.cls", b"1"), ("s0.jpg", b"x" * 100)])
    cache = tmp_path / "cache"
    shard = local_shards(tmp_path, split="test")[0]
    first = index_shard(shard, label_member="cls", cache_dir=cache)
    stat = shard_path.stat()
    other = tmp_path / "other.tar"
    write_tar(other, [("s0.cls", b"7"), ("s0.jpg", b"y" * 100)])
    assert other.stat().st_size == stat.st_size
    shard_path.write_bytes(other.read_bytes())
    os.utime(shard_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = index_shard(shard, label_member="cls", cache_dir=cache)
    assert [s.label_text for s in first.samples] == ["1"] and [s.label_text for s in again.samples] == ["7"]


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


def _rewrite_cache(cache_file: Path, change: Any) -> None:
    payload = json.loads(cache_file.read_text())
    change(payload)
    cache_file.write_text(json.dumps(payload, separators=(",", ":")))


def _shift_offset(payload: dict[str, Any]) -> None:
    payload["samples"][3]["members"]["0.webp"][0] += 512  # a digit changed on disk: still valid JSON


def _past_the_end(payload: dict[str, Any]) -> None:
    _shift_offset(payload)
    payload["samples"][3]["members"]["0.webp"][0] += 10**9
    payload["sha256"] = index_module._entries_sha256(payload["samples"])  # consistent, but impossible


@pytest.mark.parametrize(
    ("damage", "warning"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]), "damaged"),
        (lambda f: f.write_bytes(b"\xff\xfe not json"), "damaged"),
        (lambda f: _rewrite_cache(f, _shift_offset), "checksum does not match"),
        (lambda f: _rewrite_cache(f, lambda p: p["samples"][0].pop("members")), "damaged"),
        (lambda f: _rewrite_cache(f, _past_the_end), "past the end"),
    ],
    ids=["truncated", "garbage", "bit-flip", "wrong-shape", "out-of-range"],
)
def test_a_damaged_index_cache_is_rebuilt_with_a_warning(
    wds_dir: Path, tmp_path: Path, damage: Any, warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    shard = local_shards(wds_dir, split="test")[0]
    cache = tmp_path / "cache"
    first = index_shard(shard, label_member="cls", cache_dir=cache)
    (cache_file,) = (cache / "index").glob("*.json")
    damage(cache_file)
    assert index_shard(shard, label_member="cls", cache_dir=cache) == first
    messages = [r.getMessage() for r in caplog.records]
    assert any(warning in m and str(cache_file) in m for m in messages), messages
    caplog.clear()
    # Rewritten whole: read back without a warning (and without scanning the tar).
    assert index_shard(shard, label_member="cls", cache_dir=cache) == first
    assert not caplog.records


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_an_index_cache_write_that_fails_warns_and_goes_on_uncached(
    wds_dir: Path, tmp_path: Path, code: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shard = local_shards(wds_dir, split="test")[0]
    expected = index_shard(shard, label_member="cls", cache_dir=tmp_path / "reference")
    real_write = Path.write_text

    def failing_write(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name.endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write)
    cache = tmp_path / "cache"
    assert index_shard(shard, label_member="cls", cache_dir=cache) == expected
    assert list((cache / "index").iterdir()) == []  # no cache entry, no partial file
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot write cache file" in m and os.strerror(code) in m for m in messages), messages


def test_index_cache_files_follow_the_umask(wds_dir: Path, tmp_path: Path) -> None:
    shard = local_shards(wds_dir, split="test")[0]
    for umask, mode in ((0o022, 0o644), (0o002, 0o664)):
        previous = os.umask(umask)
        try:
            index_shard(shard, label_member="cls", cache_dir=tmp_path / oct(umask))
        finally:
            os.umask(previous)
        (cache_file,) = (tmp_path / oct(umask) / "index").glob("*.json")
        assert stat.S_IMODE(cache_file.stat().st_mode) == mode
