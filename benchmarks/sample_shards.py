"""Real photos as shards in the shape of the real ImageNet export, for the benchmarks.

``../shared/data/imagenet-sample`` (outside the repository; see its README) holds 1000 ImageNet photos,
one per class, with ``labels.tsv``. ``photo_shards`` re-encodes the first ``n_images`` of them (in class
order) as WebP into ``<out>/test/{i}.tar`` with members ``<key>.0.webp`` and ``<key>.cls``, as
``haideraltahan/wds_imagenet1k`` stores them, plus ``test/nshards.txt`` as clip_benchmark exports have.
The shards are written once per size under a cache directory, never into the repository.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
from pathlib import Path

from PIL import Image

DEFAULT_SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
DEFAULT_WORK_DIR = Path(os.environ.get("MILL_CACHE_DIR", Path.home() / ".cache" / "mill")) / "benchmarks"


def photo_labels(sample_dir: Path) -> list[tuple[str, int]]:
    """(file name, class index) of every photo, in class order."""
    labels = sample_dir / "labels.tsv"
    if not labels.is_file():
        raise SystemExit(
            f"{labels} not found: pass --sample_dir pointing at the imagenet-sample folder (1000 JPEGs and "
            "labels.tsv), or --data_dir pointing at existing shards"
        )
    with labels.open(newline="") as file:
        rows = [(row["filename"], int(row["class_index"])) for row in csv.DictReader(file, delimiter="\t")]
    return sorted(rows, key=lambda row: row[1])


def photo_shards(sample_dir: Path, work_dir: Path, n_images: int, n_shards: int = 4) -> Path:
    """The dataset root holding ``n_images`` photos as ``n_shards`` shards (written on first use)."""
    root = work_dir / f"imagenet-sample-{n_images}x{n_shards}"
    split = root / "test"
    if (split / "nshards.txt").is_file():
        return root
    photos = photo_labels(sample_dir)[:n_images]
    split.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(photos) // n_shards)
    for shard in range(n_shards):
        with tarfile.open(split / f"{shard}.tar", "w") as tar:
            for index in range(shard * per_shard, min(len(photos), (shard + 1) * per_shard)):
                name, label = photos[index]
                buffer = io.BytesIO()
                with Image.open(sample_dir / name) as image:
                    image.save(buffer, format="WEBP", quality=90)
                for member, data in ((f"s{index:07d}.0.webp", buffer.getvalue()), (f"s{index:07d}.cls", b"%d" % label)):
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (split / "nshards.txt").write_text(f"{n_shards}\n")
    return root
