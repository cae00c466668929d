"""What hashing a shard while it is indexed costs, on a 50,000-image shard set in the ImageNet export's shape.

Indexing reads tar headers only; since the run identity holds each shard's content sha256, indexing also reads
every byte once (the index cache then remembers the hash by the file's stat stamp, so it is paid once per file).
This script writes ``--n_images`` samples as ``--n_shards`` shards laid out as ``haideraltahan/wds_imagenet1k``
(``test/{i}.tar`` with ``<key>.0.webp`` and ``<key>.cls``, plus ``test/nshards.txt``), the image bytes cycling
through the 1000 ImageNet photos of ``../shared/data/imagenet-sample`` (JPEGs of 107 KB on average, close to the
export's 128 KB; nothing is decoded while indexing, so the format inside does not matter). It then times, for
every shard, the header scan alone and the scan plus the sha256 of the file, with the files in the page cache
(warm) and evicted from it first (cold, ``posix_fadvise(DONTNEED)`` on these files only), and deletes the shards.

    python benchmarks/shard_hashing.py                    # 50,000 images, 64 shards, in /tmp
    python benchmarks/shard_hashing.py --n_images 5000    # a smaller set; the cost scales with the bytes
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from sample_shards import DEFAULT_SAMPLE_DIR, photo_labels

from mill.core.checksum import sha256_file
from mill.data.index import _scan, split_member_name  # _scan: the header scan index_shard runs before hashing
from mill.data.source import ShardInfo, local_shards


def write_shards(sample_dir: Path, root: Path, n_images: int, n_shards: int) -> int:
    """Write the shard set under ``root``; returns its size in bytes."""
    photos = photo_labels(sample_dir)
    pool = [((sample_dir / name).read_bytes(), label) for name, label in photos]
    split = root / "test"
    split.mkdir(parents=True, exist_ok=True)
    per_shard = -(-n_images // n_shards)
    for shard in range(n_shards):
        with tarfile.open(split / f"{shard}.tar", "w") as tar:
            for index in range(shard * per_shard, min(n_images, (shard + 1) * per_shard)):
                image, label = pool[index % len(pool)]
                for member, data in ((f"s{index:07d}.0.webp", image), (f"s{index:07d}.cls", b"%d" % label)):
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (split / "nshards.txt").write_text(f"{n_shards}\n")
    return sum(path.stat().st_size for path in split.glob("*.tar"))


def evict(shards: tuple[ShardInfo, ...]) -> None:
    """Drop these files' pages from the page cache (other files are left alone)."""
    for shard in shards:
        fd = os.open(shard.path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(shards: tuple[ShardInfo, ...], work: Callable[[ShardInfo], object], *, cold: bool) -> float:
    if cold:
        evict(shards)
    else:
        for shard in shards:  # read every byte once, so the pass starts warm
            sha256_file(shard.path)
    started = time.perf_counter()
    for shard in shards:
        work(shard)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_images", type=int, default=50_000)
    parser.add_argument("--n_shards", type=int, default=64)
    parser.add_argument("--sample_dir", type=Path, default=DEFAULT_SAMPLE_DIR)
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/mill-shard-hashing"))
    parser.add_argument("--repeat", type=int, default=3, help="passes of each measurement; the fastest is kept")
    parser.add_argument("--keep", action="store_true", help="keep the shards (they are deleted by default)")
    args = parser.parse_args()

    started = time.perf_counter()
    total = write_shards(args.sample_dir, args.work_dir, args.n_images, args.n_shards)
    print(
        f"wrote {args.n_images} images in {args.n_shards} shards, {total / 1e9:.2f} GB, in "
        f"{time.perf_counter() - started:.0f} s"
    )
    try:
        shards = local_shards(args.work_dir, split="test")
        split_member_name("s0.cls")  # imports webdataset (and torch) before anything is timed

        def scan(shard: ShardInfo) -> object:
            return _scan(shard, label_member="cls", file_size=shard.size)

        def scan_and_hash(shard: ShardInfo) -> object:
            return scan(shard), sha256_file(shard.path)

        print("| page cache | index (headers only) | index and sha256 | sha256 alone | ratio | hashing adds |")
        print("|---|---|---|---|---|---|")
        for cold in (False, True):
            best = {
                name: min(timed(shards, work, cold=cold) for _ in range(args.repeat))
                for name, work in (("scan", scan), ("both", scan_and_hash), ("hash", lambda s: sha256_file(s.path)))
            }
            print(
                f"| {'cold' if cold else 'warm'} | {best['scan']:.2f} s | {best['both']:.2f} s | {best['hash']:.2f} s "
                f"({total / 1e6 / best['hash']:.0f} MB/s) | {best['both'] / best['scan']:.1f}x | "
                f"{best['both'] - best['scan']:.2f} s |"
            )
    finally:
        if not args.keep:
            shutil.rmtree(args.work_dir)


if __name__ == "__main__":
    main()
