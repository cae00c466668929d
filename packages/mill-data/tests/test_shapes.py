from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from mill.data.shapes import COLOURS, SHAPE_CLASSES, SHAPES, render_shape, write_shapes_shards


def test_every_colour_and_every_shape_spans_several_classes() -> None:
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES) == 12
    for colour in COLOURS:
        assert sum(c.colour == colour for c in SHAPE_CLASSES) == 3
    for shape in SHAPES:
        assert sum(c.shape == shape for c in SHAPE_CLASSES) == 3


def test_rendering_is_seeded() -> None:
    first = [np.asarray(render_shape(label, np.random.default_rng(3))) for label in range(12)]
    again = [np.asarray(render_shape(label, np.random.default_rng(3))) for label in range(12)]
    other = [np.asarray(render_shape(label, np.random.default_rng(4))) for label in range(12)]
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not any((a == b).all() for a, b in zip(first, other, strict=True))
    assert first[0].shape == (64, 64, 3)


def test_the_fill_colour_is_the_class_colour() -> None:
    # The shape covers the image's centre often enough that the most saturated pixels carry its colour.
    rng = np.random.default_rng(0)
    for label, shape_class in enumerate(SHAPE_CLASSES):
        pixels = np.asarray(render_shape(label, rng), dtype=float).reshape(-1, 3)
        saturated = pixels[np.argmax(pixels.max(axis=1) - pixels.min(axis=1))]
        nearest = min(COLOURS, key=lambda name: np.abs(np.array(COLOURS[name]) - saturated).sum())
        assert nearest == shape_class.colour


def test_shards_are_class_ordered_in_the_imagenet_layout(tmp_path: Path) -> None:
    paths = write_shapes_shards(tmp_path, per_class=2, n_shards=3, seed=0)
    assert paths == [tmp_path / "test" / f"{i}.tar" for i in range(3)]
    names: list[str] = []
    labels: list[int] = []
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                names.append(member.name)
                if member.name.endswith(".cls"):
                    labels.append(int(tar.extractfile(member).read()))  # type: ignore[union-attr]
    assert names[:2] == ["s0000000.0.webp", "s0000000.cls"]
    assert labels == [i // 2 for i in range(24)]
