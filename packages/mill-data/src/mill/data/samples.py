"""One selected sample of a dataset: where its image (and captions) lie, what is recorded when its image cannot be
read, and how its image bytes are decoded. Shared by the dataset, which selects samples, and the loader (torch),
which reads them.
"""

from __future__ import annotations

import io

from attrs import frozen
from PIL import Image

from mill.data.index import Member


@frozen
class SampleRef:
    """Where one selected sample's image (and captions, for a dataset with them) lies, and its label
    (:data:`~mill.core.sample.NO_LABEL` for a dataset without class labels)."""

    key: str
    shard: str
    path: str
    image: Member
    label: int
    text: Member | None = None
    #: The sample's metadata row (``dataset.metadata_member``), read when the dataset is opened.
    metadata: tuple[int, ...] | None = None


@frozen
class SkippedSample:
    """A sample left out of the batches because its image could not be decoded (``on_bad_sample="skip"``)."""

    key: str
    shard: str
    reason: str


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB mode; palette transparency goes through RGBA first, as Pillow asks."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes fully (so errors surface here, not in the transform) into RGB."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return to_rgb(image)
