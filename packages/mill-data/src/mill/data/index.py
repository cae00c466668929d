"""An index of a shard: every sample's key and where its members lie in the tar file.

Indexing reads tar headers only (no image decoding), so a 50k-sample dataset is indexed in seconds, and
each shard's index is cached as JSON keyed by the file's absolute path and stat stamp (size, mtime, inode,
ctime) so it is read once, and again after any change to the file (``cp -p`` and ``rsync -t`` keep the size
and mtime, not the inode or ctime).
Batches are then read by seeking to a member's offset, which lets workers split a shard between them.

A cached index carries the sha256 of its samples and is checked against the shard (every member inside
the file) before use, so a damaged cache file is rebuilt with a warning rather than sending reads to
wrong offsets; a cache that cannot be written (a full disk, no permission) is warned about and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from attrs import evolve, frozen

from mill.core.cachefile import write_cache
from mill.core.checksum import file_stamp, sha256_file
from mill.core.errors import DataError
from mill.data.source import ShardInfo

log = logging.getLogger(__name__)

#: Bumped whenever the cached JSON layout changes, so old caches are ignored rather than misread.
INDEX_VERSION = 3
#: Extensions tried, in this order, when no member has the spec's image member name.
IMAGE_EXTENSIONS = ("webp", "jpg", "jpeg", "png")
#: A label member larger than this is not an ASCII integer; refusing it keeps indexing headers-only fast.
MAX_LABEL_BYTES = 64


@frozen
class Member:
    """Where a member's bytes lie in its tar file."""

    offset: int
    size: int


@frozen
class IndexedSample:
    """One webdataset sample in a shard: its members by extension (``0.webp``, ``cls``) and the text of its
    label member, read at indexing time because it is a few bytes and saves a read per sample later."""

    key: str
    members: dict[str, Member]
    label_text: str | None


@frozen
class ShardIndex:
    shard: ShardInfo
    samples: tuple[IndexedSample, ...]


def split_member_name(name: str) -> tuple[str, str] | None:
    """``dir/s0001.0.webp`` → (``dir/s0001``, ``0.webp``), as webdataset groups members; None if no dot."""
    # Imported here: importing webdataset imports torch, which `mill ls` and `mill collect` never need.
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(name)
    return None if key is None or ext is None else (key, ext)


def index_shard(shard: ShardInfo, *, label_member: str | None, cache_dir: Path | None) -> ShardIndex:
    """The index of ``shard``, from the cache when the file is unchanged since it was indexed (no cache
    is read or written when ``cache_dir`` is None).

    Raises:
        DataError: the tar is truncated or corrupt (names the shard and says to re-download it), or a sample
            repeats a key or a member.
    """
    stat = shard.path.stat()
    if cache_dir is None:
        samples = _scan(shard, label_member=label_member, file_size=stat.st_size)
        return ShardIndex(shard=evolve(shard, sha256=sha256_file(shard.path)), samples=samples)
    cache_file = cache_dir / "index" / f"{index_cache_key(shard.path, stat)}.json"
    cached = _read_cache(cache_file, label_member, file_size=stat.st_size)
    if cached is not None:
        return ShardIndex(shard=evolve(shard, sha256=cached[1]), samples=cached[0])
    samples = _scan(shard, label_member=label_member, file_size=stat.st_size)
    # Read once, while the file is indexed: its stamp keys the cache, so a changed file is hashed again.
    content_sha256 = sha256_file(shard.path)
    entries = [
        {"key": s.key, "members": {e: [m.offset, m.size] for e, m in s.members.items()}, "label": s.label_text}
        for s in samples
    ]
    payload = {
        "version": INDEX_VERSION,
        "path": str(shard.path.resolve()),
        "label_member": label_member,
        "sha256": _entries_sha256(entries),
        "content_sha256": content_sha256,
        "samples": entries,
    }
    write_cache(cache_file, lambda tmp: tmp.write_text(json.dumps(payload, separators=(",", ":"))))
    return ShardIndex(shard=evolve(shard, sha256=content_sha256), samples=samples)


def index_cache_key(path: Path, stat: os.stat_result) -> str:
    """A file name for the cached index of the file at ``path`` as ``stat`` finds it: any change to its stamp
    (:func:`~mill.core.checksum.file_stamp`: size, mtime, inode, ctime) is a new index (pure)."""
    stamp = "\0".join(str(value) for value in file_stamp(stat).values())
    return hashlib.sha256(f"{path.resolve()}\0{stamp}".encode()).hexdigest()[:32]


def _read_cache(
    cache_file: Path, label_member: str | None, *, file_size: int
) -> tuple[tuple[IndexedSample, ...], str] | None:
    """The cached samples and the shard's content sha256, or None when there is no usable cache (missing, of
    another layout, or damaged: unreadable, failing its checksum, or pointing outside the shard, which is rebuilt
    with a warning)."""
    try:
        data = cache_file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("shard index cache %s is unreadable (%s); re-indexing the shard", cache_file, error.strerror)
        return None
    try:
        payload = json.loads(data)  # bytes: a non-UTF-8 file is a ValueError here, like bad JSON
        if payload.get("version") != INDEX_VERSION or payload.get("label_member") != label_member:
            return None  # another layout or label member: not damage, just not this index
        entries = payload["samples"]
        if payload.get("sha256") != _entries_sha256(entries):
            raise ValueError("its checksum does not match")
        content_sha256 = payload["content_sha256"]
        if not isinstance(content_sha256, str):
            raise ValueError("it records no content hash")
        samples = tuple(
            IndexedSample(
                key=str(s["key"]),
                members={str(e): Member(offset=int(o), size=int(n)) for e, (o, n) in s["members"].items()},
                label_text=None if s["label"] is None else str(s["label"]),
            )
            for s in entries
        )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        log.warning("shard index cache %s is damaged (%s); re-indexing the shard", cache_file, error)
        return None
    if any(m.offset < 0 or m.offset + m.size > file_size for s in samples for m in s.members.values()):
        log.warning("shard index cache %s points past the end of its shard; re-indexing the shard", cache_file)
        return None
    return samples, content_sha256


def _entries_sha256(entries: Any) -> str:
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()


def _scan(shard: ShardInfo, *, label_member: str | None, file_size: int) -> tuple[IndexedSample, ...]:
    redownload = f"re-download it (delete {shard.path} and run again) or remove it from the data directory"
    members: dict[str, dict[str, Member]] = {}  # insertion order is the shard's sample order
    labels: dict[str, str] = {}
    last_key = None
    try:
        with open(shard.path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > file_size:
                    raise DataError(
                        f"shard {shard.name} ({shard.path}) is truncated: member {info.name} ends past the "
                        f"end of the file; {redownload}"
                    )
                parts = split_member_name(info.name)
                if parts is None:
                    continue  # webdataset skips members without an extension too
                key, ext = parts
                if key != last_key and key in members:
                    raise DataError(
                        f"shard {shard.name}: sample {key!r} appears twice (its members are not adjacent); "
                        "keys must be unique across the dataset"
                    )
                last_key = key
                sample = members.setdefault(key, {})
                if ext in sample:
                    raise DataError(f"shard {shard.name}: sample {key!r} has two {ext!r} members")
                sample[ext] = Member(offset=info.offset_data, size=info.size)
                if ext == label_member:
                    # tarfile seeks back to its next header itself, so reading here is safe.
                    labels[key] = _read_label(raw, info, shard=shard, key=key)
            # tarfile takes a header cut short, or garbage where a header should be, for the end of the
            # archive; a whole tar ends with zero blocks, so anything else there means damage.
            raw.seek(tar.offset)
            if raw.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
                raise DataError(
                    f"shard {shard.name} ({shard.path}) is truncated or corrupt: no valid header or "
                    f"end-of-archive marker at byte {tar.offset}; {redownload}"
                )
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"shard {shard.name} ({shard.path}) is truncated or corrupt ({error}); {redownload}") from error
    return tuple(IndexedSample(key=k, members=m, label_text=labels.get(k)) for k, m in members.items())


def _read_label(raw: BinaryIO, info: tarfile.TarInfo, *, shard: ShardInfo, key: str) -> str:
    if info.size > MAX_LABEL_BYTES:
        raise DataError(
            f"shard {shard.name}, sample {key!r}: label member {info.name} has {info.size} bytes; "
            "expected an ASCII integer"
        )
    raw.seek(info.offset_data)
    data = raw.read(info.size)
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise DataError(
            f"shard {shard.name}, sample {key!r}: label member {info.name} is not ASCII text; "
            "expected an integer class index"
        ) from None
