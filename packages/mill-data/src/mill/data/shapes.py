"""Rendered coloured shapes: the images of the bundled ``shapes`` benchmark and of the demo model's training set.

Twelve classes, each a colour and a shape, chosen so that every colour comes in three shapes and every shape in
three colours: neither the colour nor the shape alone decides the class, so a model must bind the two (and its
text tower must tell "red circle" from "green circle" and from "red square"). Samples of a class vary in
position, size, rotation, hue and background, drawn from a seeded generator: the same seed renders the same
images, and another seed renders different ones of the same classes (how the demo model is trained without ever
seeing the shipped evaluation images).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from attrs import frozen
from PIL import Image, ImageDraw

from mill.data.synthetic import write_image_shards

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (45, 165, 65),
    "blue": (40, 85, 215),
    "yellow": (240, 200, 35),
}
SHAPES = ("circle", "square", "triangle", "cross")
#: Drawing at this multiple of the output size, then downsampling, gives smooth (anti-aliased) edges.
SUPERSAMPLE = 4


@frozen
class ShapeClass:
    """One class of the benchmark: a shape filled with a colour."""

    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


#: The classes in label order; specs/shapes_classnames.txt lists the same names in the same order.
#: Each colour lacks one shape (red: cross, green: circle, blue: square, yellow: triangle).
SHAPE_CLASSES: tuple[ShapeClass, ...] = tuple(
    ShapeClass(colour, shape)
    for colour_index, colour in enumerate(COLOURS)
    for shape_index, shape in enumerate(SHAPES)
    if shape_index != (colour_index + 3) % len(SHAPES)
)


def render_shape(label: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """An RGB ``size`` × ``size`` image of class ``label`` of :data:`SHAPE_CLASSES` on a greyish background.

    Position, size, rotation, fill hue and the background gradient are drawn from ``rng``.
    """
    shape_class = SHAPE_CLASSES[label]
    background = _background(rng, size)
    canvas = size * SUPERSAMPLE
    radius = rng.uniform(0.2, 0.34) * canvas
    margin = radius * 1.05
    centre = rng.uniform(margin, canvas - margin, 2)
    angle = rng.uniform(0, 2 * math.pi)
    fill = np.clip(np.array(COLOURS[shape_class.colour]) * rng.uniform(0.85, 1.1) + rng.normal(0, 12, 3), 0, 255)
    # Only the shape's mask is drawn large: a supersampled background would cost far more and gain nothing.
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    if shape_class.shape == "circle":
        x, y = centre
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    else:
        draw.polygon(_outline(shape_class.shape, centre, radius, angle), fill=255)
    alpha = np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=float)[..., None] / 255
    pixels = background * (1 - alpha) + fill * alpha
    return Image.fromarray(np.round(pixels).astype(np.uint8), mode="RGB")


def write_shapes_shards(out_dir: Path, *, per_class: int, n_shards: int, seed: int, size: int = 64) -> list[Path]:
    """Write ``per_class`` images of every class, class-ordered, as ``out_dir/test/{i}.tar`` in the layout of the
    ImageNet export (``<key>.0.webp`` + ``<key>.cls``). Deterministic for given arguments."""
    rng = np.random.default_rng(seed)
    labels = [index // per_class for index in range(len(SHAPE_CLASSES) * per_class)]
    samples = ((label, render_shape(label, rng, size)) for label in labels)
    return write_image_shards(out_dir, samples, n_samples=len(labels), n_shards=n_shards)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` × ``size`` × 3 pixel values: a linear gradient between two low-saturation colours."""
    ends = rng.uniform(60, 200, (2, 1)) + rng.normal(0, 10, (2, 3))
    direction = rng.uniform(0, 2 * math.pi)
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    t = np.clip(0.5 + (x - 0.5) * math.cos(direction) + (y - 0.5) * math.sin(direction), 0, 1)[..., None]
    # numpy's stubs type np.mgrid's grids as Any, and so everything computed from them.
    gradient: np.ndarray = np.clip(ends[0] + (ends[1] - ends[0]) * t, 0, 255)
    return gradient


def _outline(shape: str, centre: np.ndarray, radius: float, angle: float) -> list[tuple[float, float]]:
    """The polygon of ``shape`` around ``centre``, rotated by ``angle``; sizes chosen for similar areas."""
    if shape == "square":
        points = [(math.cos(k * math.pi / 2), math.sin(k * math.pi / 2)) for k in range(4)]
    elif shape == "triangle":
        points = [(1.2 * math.cos(k * 2 * math.pi / 3), 1.2 * math.sin(k * 2 * math.pi / 3)) for k in range(3)]
    elif shape == "cross":
        arm, half = 1.0, 0.34
        points = [
            (half, half), (arm, half), (arm, -half), (half, -half), (half, -arm), (-half, -arm),
            (-half, -half), (-arm, -half), (-arm, half), (-half, half), (-half, arm), (half, arm),
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    cos, sin = math.cos(angle), math.sin(angle)
    return [
        (centre[0] + radius * (px * cos - py * sin), centre[1] + radius * (px * sin + py * cos)) for px, py in points
    ]
