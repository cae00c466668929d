"""Reading samples back by key from local shards, after a run: the images of a few chosen samples (the
misclassified ones a report shows), without indexing or decoding anything else.

Only local files are read; nothing is ever downloaded here.
"""

from __future__ import annotations

import tarfile
from collections.abc import Collection
from pathlib import Path

from mill.data.index import IMAGE_EXTENSIONS, split_member_name


def local_shard(source: str, shard: str) -> Path | None:
    """The file of shard ``shard`` (``test/0.tar``) of a run's data ``source``, when the source is a local
    folder and the file is there; None otherwise (a remote source, or shards moved or deleted)."""
    if "://" in source:
        return None
    path = Path(source) / shard
    return path if path.is_file() else None


def read_images(path: Path, keys: Collection[str]) -> dict[str, bytes]:
    """The encoded image bytes of each of ``keys`` found in the shard at ``path`` (the first member with an
    image extension of each key); keys not in the shard are absent from the result.

    Raises:
        OSError: the file cannot be read. ``tarfile.TarError``: it is not a tar archive.
    """
    wanted = set(keys)
    found: dict[str, bytes] = {}
    with tarfile.open(path, mode="r:") as archive:
        for info in archive:
            if len(found) == len(wanted):
                break
            parts = split_member_name(info.name)
            if parts is None or not info.isfile():
                continue
            key, extension = parts
            if key in wanted and key not in found and extension.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
                member = archive.extractfile(info)
                if member is not None:
                    found[key] = member.read()
    return found
