"""Reading a dataset's selected samples in batches with a torch DataLoader: the one part of mill-data that
needs torch, kept apart so that importing :mod:`mill.data` costs no torch.

Workers split the selected samples (contiguous slices, so reads stay sequential within a shard); a decode
failure in a worker travels back as data so its message arrives intact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import torch
from attrs import frozen
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mill.core.errors import DataError
from mill.core.sample import OnBadSample
from mill.data.index import Member
from mill.data.samples import SampleRef, SkippedSample, decode_image

Collated = tuple[list[str], list[str], list[int], Any, list[tuple[str, ...]] | None, list[SkippedSample]]


def load_batches(
    samples: tuple[SampleRef, ...],
    *,
    batch_size: int,
    num_workers: int,
    transform: Callable[[Any], Any] | None,
    on_bad_sample: OnBadSample,
    pin_memory: bool,
) -> Iterator[Collated]:
    """(keys, shards, labels, images, texts, skipped) per batch of ``samples``, decoded and transformed in the
    workers; ``texts`` holds each sample's captions (its text member's lines), None for samples without one.

    Raises:
        DataError: an image cannot be decoded, unless ``on_bad_sample="skip"``.
    """
    stream = _SampleStream(samples, transform=transform, on_bad_sample=on_bad_sample)
    loader: DataLoader[Any] = DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        # Pinning without an accelerator only produces a warning.
        pin_memory=pin_memory and torch.cuda.is_available(),
    )
    for collated in loader:
        if isinstance(collated, _Failure):
            raise DataError(collated.message)
        yield collated


@frozen
class _Item:
    key: str
    shard: str
    label: int
    image: Any
    texts: tuple[str, ...] | None


@frozen
class _Failure:
    """A DataError raised in a worker, carried to the main process as data so its message arrives intact
    (torch re-raises worker exceptions wrapped in a traceback dump)."""

    message: str


class _SampleStream(IterableDataset[Any]):
    def __init__(
        self,
        samples: tuple[SampleRef, ...],
        *,
        transform: Callable[[Any], Any] | None,
        on_bad_sample: OnBadSample,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.on_bad_sample = on_bad_sample

    def __iter__(self) -> Iterator[_Item | SkippedSample | _Failure]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        # A contiguous slice keeps each worker's reads sequential within a shard.
        n = len(self.samples)
        mine = self.samples[worker * n // workers : (worker + 1) * n // workers]
        files: dict[str, BinaryIO] = {}
        try:
            for ref in mine:
                handle = files.get(ref.path)
                if handle is None:
                    handle = files[ref.path] = open(ref.path, "rb")  # noqa: SIM115 (closed below)
                try:
                    image = decode_image(_read(handle, ref.image))
                    texts = None if ref.text is None else _captions(_read(handle, ref.text))
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                    what = "captions" if isinstance(error, _CaptionError) else "image"
                    reason = f"shard {ref.shard}, sample {ref.key!r}: cannot decode the {what} ({error})"
                    if self.on_bad_sample == "skip":
                        yield SkippedSample(key=ref.key, shard=ref.shard, reason=reason)
                        continue
                    yield _Failure(f"{reason}; re-download the shard, or remove the sample from the data")
                    return
                if self.transform is not None:
                    image = self.transform(image)
                yield _Item(key=ref.key, shard=ref.shard, label=ref.label, image=image, texts=texts)
        finally:
            for handle in files.values():
                handle.close()


class _CaptionError(ValueError):
    """A sample's text member holds no caption, or is not UTF-8."""


def _read(handle: BinaryIO, member: Member) -> bytes:
    handle.seek(member.offset)
    data = handle.read(member.size)
    if len(data) != member.size:
        raise OSError(f"read {len(data)} of {member.size} bytes; the shard has shrunk")
    return data


def _captions(data: bytes) -> tuple[str, ...]:
    """A text member's captions: its lines as ``str.splitlines`` splits them, as clip_benchmark's webdataset
    loader reads a retrieval export's ``txt``."""
    try:
        captions = tuple(data.decode("utf-8").splitlines())
    except UnicodeDecodeError as error:
        raise _CaptionError(f"the text member is not UTF-8: {error}") from None
    if not captions:
        raise _CaptionError("the text member holds no caption")
    return captions


def _collate(items: list[_Item | SkippedSample | _Failure]) -> Collated | _Failure:
    for item in items:
        if isinstance(item, _Failure):
            return item
    good = [i for i in items if isinstance(i, _Item)]
    skipped = [i for i in items if isinstance(i, SkippedSample)]
    images: Any = [i.image for i in good]
    if images and all(isinstance(im, torch.Tensor) for im in images):
        images = torch.stack(images)
    texts = [i.texts for i in good]
    captions = None if any(t is None for t in texts) else [t for t in texts if t is not None]
    return [i.key for i in good], [i.shard for i in good], [i.label for i in good], images, captions, skipped
