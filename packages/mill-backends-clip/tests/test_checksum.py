from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mill.backends.clip import checksum


def test_hash_is_cached_by_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"abc" * 1000)
    cache = tmp_path / "cache"
    calls: list[Path] = []
    real = checksum.sha256_of
    monkeypatch.setattr(checksum, "sha256_of", lambda path: calls.append(path) or real(path))

    first = checksum.file_sha256(weights, cache_dir=cache)
    assert first == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert checksum.file_sha256(weights, cache_dir=cache) == first
    assert len(calls) == 1, "an unchanged file must not be re-hashed"
    assert (cache / "file_hashes.json").is_file()

    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert checksum.file_sha256(weights, cache_dir=cache) == first
    assert len(calls) == 2, "a new mtime must trigger a re-hash"

    weights.write_bytes(b"different")
    assert checksum.file_sha256(weights, cache_dir=cache) == hashlib.sha256(b"different").hexdigest()
    assert len(calls) == 3


def test_damaged_index_costs_only_a_rehash(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    (tmp_path / "file_hashes.json").write_text("{not json")
    assert checksum.file_sha256(weights, cache_dir=tmp_path) == hashlib.sha256(b"x").hexdigest()


def test_index_is_written_with_the_users_umask_and_leaves_no_temporary(tmp_path: Path) -> None:
    # A cache shared on a cluster must be readable as the umask says; mkstemp alone would make it owner-only.
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    cache = tmp_path / "cache"
    old = os.umask(0o022)
    try:
        checksum.file_sha256(weights, cache_dir=cache)
    finally:
        os.umask(old)
    assert (cache / checksum.INDEX_NAME).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in cache.iterdir()) == [checksum.INDEX_NAME, checksum.INDEX_NAME + ".lock"]


@pytest.mark.parametrize("how", ["in_place", "renamed_over"])
def test_a_same_size_checkpoint_with_its_mtime_kept_is_hashed_again(tmp_path: Path, how: str) -> None:
    # `cp -p` writes in place and `rsync -t` renames a new file over it; both keep size and mtime.
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"a" * 4096)
    cache = tmp_path / "cache"
    first = checksum.file_sha256(weights, cache_dir=cache)
    stat = weights.stat()
    if how == "in_place":
        weights.write_bytes(b"b" * 4096)
    else:
        (tmp_path / "new.bin").write_bytes(b"b" * 4096)
        os.replace(tmp_path / "new.bin", weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    again = checksum.file_sha256(weights, cache_dir=cache)
    assert again == hashlib.sha256(b"b" * 4096).hexdigest() != first
