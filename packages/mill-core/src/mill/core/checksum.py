"""Checksums of the files a run commits, so a damaged file (a partial copy, a filesystem fault) is found
before its contents are trusted.

A chunk's checksum lives in a sidecar beside it, ``{name}.sha256``, in ``sha256sum`` format
(``sha256sum -c chunk-00000.parquet.sha256`` checks it by hand). The sidecar is written after the
chunk is renamed into place, so a chunk without one was cut off before its commit finished.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mill.core.atomic import write_bytes_atomic

SIDECAR_SUFFIX = ".sha256"
_BLOCK = 1 << 20


def file_stamp(stat: os.stat_result) -> dict[str, int]:
    """What says a file is unchanged without reading it, as git's index keeps it: size, modification time,
    inode and change time (ns). A copy that keeps the size and the modification time (``cp -p``,
    ``rsync -t``) still changes the inode or the change time, so a cache keyed by this stamp is never
    trusted for a file whose content may differ: any change means reading (hashing) the file again."""
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino, "ctime_ns": stat.st_ctime_ns}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of ``path``'s bytes, read a block at a time.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(path: Path, *digests: str) -> Path:
    """Record ``digests`` as the checksums ``path`` may have in its sidecar (atomically); returns the sidecar.

    One digest is the rule. ``aggregate.csv`` records the old and the new one while it is replaced, so
    that a writer killed between the two renames leaves a file that still checks.
    """
    sidecar = sidecar_path(path)
    write_bytes_atomic(sidecar, ["".join(f"{digest}  {path.name}\n" for digest in digests).encode()])
    return sidecar


def recorded_digests(path: Path) -> list[str] | None:
    """The checksums recorded for ``path`` in its sidecar; None when there is no readable sidecar."""
    try:
        text = sidecar_path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = [line.partition("  ") for line in text.splitlines()]
    digests = [digest for digest, _, name in lines if name == path.name and len(digest) == 64]
    return digests or None


def damage_of(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (no checksum recorded, checksum differs, unreadable); None when whole."""
    expected = recorded_digests(path)
    if expected is None:
        return f"no checksum recorded ({sidecar_path(path).name} is missing or unreadable)"
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if actual not in expected:
        return f"its checksum {actual[:12]}… differs from the one recorded when it was written, {expected[-1][:12]}…"
    return None


MANIFEST_HASH_KEY = "manifest_sha256"


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """The hash of a manifest's content, itself excluded: canonical JSON (sorted keys), so the
    manifest can carry its own hash and a reader recomputes it from the parsed file."""
    content = {key: value for key, value in manifest.items() if key != MANIFEST_HASH_KEY}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return sha256_bytes(canonical.encode())


def with_manifest_digest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` as it will read back from JSON, with its own hash under :data:`MANIFEST_HASH_KEY`."""
    plain: dict[str, Any] = json.loads(json.dumps(dict(manifest), default=str))
    plain[MANIFEST_HASH_KEY] = manifest_digest(plain)
    return plain
