"""Content hashes of checkpoint files, remembered by path and stat stamp (size, mtime, inode, ctime: see
:func:`mill.core.checksum.file_stamp`) so large files are hashed once, and again whenever any of them changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mill.core.cachefile import cache_lock, write_cache
from mill.core.checksum import file_stamp

INDEX_NAME = "file_hashes.json"
_CHUNK = 16 * 1024 * 1024


def file_sha256(path: Path, *, cache_dir: Path | None) -> str:
    """The sha256 hex digest of ``path``'s content.

    Looked up in ``{cache_dir}/file_hashes.json`` first (unless ``cache_dir`` is None); an entry is reused
    only while the file's absolute path and stamp (size, modification time, inode, change time) are unchanged.
    """
    path = path.expanduser().resolve()
    if cache_dir is None:
        return sha256_of(path)
    stat = path.stat()
    stamp = file_stamp(stat)
    index = cache_dir / INDEX_NAME
    with cache_lock(index):
        entry = _read_index(index).get(str(path))
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in stamp.items()):
        return str(entry["sha256"])
    # Hashing happens outside the lock: other runs need not wait for a multi-GB read.
    digest = sha256_of(path)
    with cache_lock(index):
        entries = _read_index(index)
        entries[str(path)] = {**stamp, "sha256": digest}
        write_cache(index, lambda tmp: tmp.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8"))
    return digest


def sha256_of(path: Path) -> str:
    """Hash the whole file (the slow path :func:`file_sha256` avoids)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_index(index: Path) -> dict[str, Any]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # A missing, damaged or unreadable index (another user's cache) only costs a re-hash.
        return {}
    return data if isinstance(data, dict) else {}
