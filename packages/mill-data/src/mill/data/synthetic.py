"""Synthetic shards in the shape of the real exports, for tests, benchmarks and the bundled demo.

Images are drawn from the seed so that classes look clearly different (a class-dependent colour, stripe
frequency, orientation and blob position) while samples of a class vary (jitter and noise): even a randomly
initialised model then spreads its predictions over many classes. A few samples are stored as greyscale
("L") or palette ("P") PNGs, because WebP cannot hold those modes and real data has greyscale photographs:
readers must convert them to RGB, and find the image member by extension when its name differs.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from mill.core.spec import DatasetSpec

Layout = Literal["wds_imagenet1k", "clip_benchmark"]

#: Every n-th sample is stored greyscale / palette (offsets chosen so the two never coincide in a row).
GREY_EVERY = 9
PALETTE_EVERY = 13


def synthetic_dataset_spec(root: Path, *, n_samples: int, split: str = "test") -> DatasetSpec:
    """The dataset section of a spec that reads shards written under ``root`` by :func:`write_synthetic_shards`
    (either layout: the image member is found by extension when ``0.webp`` is absent)."""
    return DatasetSpec(source=str(root), split=split, image_member="0.webp", label_member="cls", n_samples=n_samples)


def write_synthetic_shards(
    out_dir: Path,
    *,
    n_classes: int,
    per_class: int,
    n_shards: int,
    split: str = "test",
    image_size: int = 64,
    seed: int = 0,
    layout: Layout = "wds_imagenet1k",
    mixed_modes: bool = True,
) -> list[Path]:
    """Write ``n_classes * per_class`` samples, class-ordered, into ``n_shards`` tars under ``out_dir/split``.

    Layouts:
        ``wds_imagenet1k``: ``{split}/{i}.tar`` with members ``<key>.0.webp`` and ``<key>.cls``.
        ``clip_benchmark``: ``{split}/{i}.tar`` with members ``<key>.webp`` and ``<key>.cls``, plus
        ``{split}/nshards.txt``.

    Keys are ``s0000000``, ``s0000001``, ... in class order; ``cls`` holds the class index as ASCII. With
    ``mixed_modes`` some images are greyscale or palette PNGs (member ``<key>.0.png`` / ``<key>.png``).
    The output is byte-for-byte deterministic for given arguments. Returns the shard paths in order.
    """
    if n_classes <= 0 or per_class <= 0 or n_shards <= 0:
        raise ValueError("n_classes, per_class and n_shards must be positive")
    rng = np.random.default_rng(seed)
    labels = [index // per_class for index in range(n_classes * per_class)]
    images = (synthetic_image(label, n_classes=n_classes, size=image_size, rng=rng) for label in labels)
    return write_image_shards(
        out_dir,
        zip(labels, images, strict=True),
        n_samples=len(labels),
        n_shards=n_shards,
        split=split,
        layout=layout,
        mixed_modes=mixed_modes,
    )


def write_image_shards(
    out_dir: Path,
    samples: Iterable[tuple[int, Image.Image]],
    *,
    n_samples: int,
    n_shards: int,
    split: str = "test",
    layout: Layout = "wds_imagenet1k",
    mixed_modes: bool = False,
) -> list[Path]:
    """Write ``n_samples`` (label, image) pairs, in the order given, into ``n_shards`` tars under ``out_dir/split``.

    Same layouts, keys and member names as :func:`write_synthetic_shards`; images are stored as lossless
    WebP (with ``mixed_modes``, some as greyscale or palette PNGs). Byte-for-byte deterministic for the same
    samples. Returns the shard paths in order.
    """
    targets = ((image, {"cls": str(label).encode("ascii")}) for label, image in samples)
    return _write_shards(
        out_dir, targets, n_samples=n_samples, n_shards=n_shards, split=split, layout=layout, mixed_modes=mixed_modes
    )


def write_metadata_shards(
    out_dir: Path,
    samples: Iterable[tuple[int, Image.Image, Sequence[int]]],
    *,
    n_samples: int,
    n_shards: int,
    split: str = "test",
) -> list[Path]:
    """Write ``n_samples`` (label, image, metadata row) triples, in the order given, in the layout of DataComp's
    exports of the WILDS and geographic datasets: the clip_benchmark layout, each sample also holding its
    metadata row as ``<key>.npy`` (a NumPy int64 array, as webdataset encodes one). Returns the shard paths.
    """
    targets = ((image, {"cls": str(label).encode("ascii"), "npy": _npy(row)}) for label, image, row in samples)
    return _write_shards(
        out_dir,
        targets,
        n_samples=n_samples,
        n_shards=n_shards,
        split=split,
        layout="clip_benchmark",
        mixed_modes=False,
    )


def _npy(row: Sequence[int]) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asarray(row, dtype=np.int64), allow_pickle=False)
    return out.getvalue()


def write_export_files(out_dir: Path, classnames: Sequence[str], templates: Sequence[str]) -> None:
    """Beside the split folder, the files a clip_benchmark export holds for zero-shot classification:
    ``classnames.txt`` and ``zeroshot_classification_templates.txt``, one entry per line."""
    (out_dir / "classnames.txt").write_text("".join(f"{name}\n" for name in classnames), encoding="utf-8")
    (out_dir / "zeroshot_classification_templates.txt").write_text(
        "".join(f"{template}\n" for template in templates), encoding="utf-8"
    )


def write_caption_shards(
    out_dir: Path,
    samples: Iterable[tuple[Image.Image, Sequence[str]]],
    *,
    n_samples: int,
    n_shards: int,
    split: str = "test",
) -> list[Path]:
    """Write ``n_samples`` (image, captions) pairs, in the order given, in the layout of clip_benchmark's retrieval
    exports (``clip_benchmark.webdataset_builder.convert_retrieval_dataset``): ``{split}/{i}.tar`` with members
    ``<key>.webp`` and ``<key>.txt`` (the captions, one per line, a newline inside a caption written as ``\\n``),
    ``{split}/nshards.txt``, and ``dataset_type.txt`` holding ``retrieval`` beside the split folder.

    Keys are ``s0000000``, ``s0000001``, ...; images are lossless WebP. Byte-for-byte deterministic for the same
    samples. Returns the shard paths in order.
    """
    targets = (
        (image, {"txt": "\n".join(c.replace("\n", r"\n") for c in captions).encode("utf-8")})
        for image, captions in samples
    )
    paths = _write_shards(
        out_dir,
        targets,
        n_samples=n_samples,
        n_shards=n_shards,
        split=split,
        layout="clip_benchmark",
        mixed_modes=False,
    )
    (out_dir / "dataset_type.txt").write_text("retrieval\n")
    return paths


def _write_shards(
    out_dir: Path,
    samples: Iterable[tuple[Image.Image, dict[str, bytes]]],
    *,
    n_samples: int,
    n_shards: int,
    split: str,
    layout: Layout,
    mixed_modes: bool,
) -> list[Path]:
    """Write (image, target members) pairs as webdataset shards: the image first, then its targets."""
    if n_shards <= 0 or n_shards > n_samples:
        raise ValueError(f"cannot spread {n_samples} samples over {n_shards} shards")
    # Imported here: importing webdataset imports torch, and importing this module should stay light.
    from webdataset import TarWriter

    image_prefix = "0." if layout == "wds_imagenet1k" else ""
    folder = out_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    iterator = iter(samples)
    paths = []
    bounds = [round(i * n_samples / n_shards) for i in range(n_shards + 1)]
    for shard_i in range(n_shards):
        path = folder / f"{shard_i}.tar"
        # Fixed metadata (mtime 0, no owner) and bytes written as given make the shards identical across runs
        # and machines.
        with open(path, "wb") as out, TarWriter(out, user="", group="", mode=0o644, mtime=0, encoder=False) as tar:
            for index in range(bounds[shard_i], bounds[shard_i + 1]):
                image, targets = next(iterator)
                key = f"s{index:07d}"
                ext, data = _encode(image, index if mixed_modes else -1)
                # One write per member: TarWriter sorts a sample's members by name, and the exports store
                # the image before the label (``webp`` would sort after ``cls``).
                tar.write({"__key__": key, f"{image_prefix}{ext}": data})
                for member, target in targets.items():
                    tar.write({"__key__": key, member: target})
        paths.append(path)
    if layout == "clip_benchmark":
        (folder / "nshards.txt").write_text(f"{n_shards}\n")
    return paths


def synthetic_image(label: int, *, n_classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image whose colour, stripes and blob identify ``label``; ``rng`` adds per-sample variation."""
    # Random vision models respond mostly to the overall colour (a patch embedding averages its patch), so
    # each class has its own colour over the full RGB range; a blob and broad stripes of a second colour
    # give the class a shape, and jitter and noise make its samples differ.
    palette = np.random.default_rng(label)  # the class's look depends on the label only, not on the seed
    colour, accent = palette.uniform(0, 1, 3), palette.uniform(0, 1, 3)
    frequency = 0.5 + (label * 7 % 5) * 0.5
    angle = np.pi * ((label * 0.381966) % 1.0) + rng.normal(0, 0.05)
    phase = rng.uniform(0, 0.5)
    y, x = np.mgrid[0:size, 0:size] / size
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    centre = np.array([(label * 0.317) % 0.6 + 0.2, (label * 0.529) % 0.6 + 0.2]) + rng.normal(0, 0.03, 2)
    blob = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * (0.08 + 0.03 * (label % 3)) ** 2))
    weight = np.clip(stripes * 0.25 + blob * 0.6, 0, 1)[..., None]
    pixels = colour + (accent - colour) * weight + rng.normal(0, 0.03, (size, size, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="RGB")


def _encode(image: Image.Image, index: int) -> tuple[str, bytes]:
    """The member extension and bytes of ``image``: lossless WebP, or a greyscale / palette PNG for some."""
    out = io.BytesIO()
    if index >= 0 and index % GREY_EVERY == 4:
        image.convert("L").save(out, format="PNG")
        return "png", out.getvalue()
    if index >= 0 and index % PALETTE_EVERY == 6:
        image.quantize(colors=16, method=Image.Quantize.MEDIANCUT).save(out, format="PNG")
        return "png", out.getvalue()
    image.save(out, format="WEBP", lossless=True, method=0)
    return "webp", out.getvalue()
