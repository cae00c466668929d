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
from mill.data.dataset import SampleRef, SkippedSample, decode_image

Collated = tuple[list[str], list[str], list[int], Any, list[SkippedSample]]


def load_batches(
    samples: tuple[SampleRef, ...],
    *,
    batch_size: int,
    num_workers: int,
    transform: Callable[[Any], Any] | None,
    on_bad_sample: OnBadSample,
    pin_memory: bool,
) -> Iterator[Collated]:
    """(keys, shards, labels, images, skipped) per batch of ``samples``, decoded and transformed in the workers.

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
                handle.seek(ref.image.offset)
                data = handle.read(ref.image.size)
                try:
                    if len(data) != ref.image.size:
                        raise OSError(f"read {len(data)} of {ref.image.size} bytes; the shard has shrunk")
                    image = decode_image(data)
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                    reason = f"shard {ref.shard}, sample {ref.key!r}: cannot decode the image ({error})"
                    if self.on_bad_sample == "skip":
                        yield SkippedSample(key=ref.key, shard=ref.shard, reason=reason)
                        continue
                    yield _Failure(f"{reason}; re-download the shard, or remove the sample from the data")
                    return
                if self.transform is not None:
                    image = self.transform(image)
                yield _Item(key=ref.key, shard=ref.shard, label=ref.label, image=image)
        finally:
            for handle in files.values():
                handle.close()


def _collate(
    items: list[_Item | SkippedSample | _Failure],
) -> tuple[list[str], list[str], list[int], Any, list[SkippedSample]] | _Failure:
    for item in items:
        if isinstance(item, _Failure):
            return item
    good = [i for i in items if isinstance(i, _Item)]
    skipped = [i for i in items if isinstance(i, SkippedSample)]
    images: Any = [i.image for i in good]
    if images and all(isinstance(im, torch.Tensor) for im in images):
        images = torch.stack(images)
    return [i.key for i in good], [i.shard for i in good], [i.label for i in good], images, skipped
