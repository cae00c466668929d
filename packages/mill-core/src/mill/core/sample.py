"""What a data source hands to a backend: batches of decoded samples, and the source's contract.

mill-core defines the contract; mill-data implements it (webdataset shards). Keeping the
protocol here lets backends and the runner be typed without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from attrs import frozen


@frozen
class SampleBatch:
    """One batch of samples, in the order the loader produced them.

    ``images`` is whatever the transform returned, collated: a stacked tensor when the
    transform returns tensors (CLIP preprocessing), a list of RGB PIL images when no
    transform is given (generative backends hand PIL images to their processor).
    """

    keys: Sequence[str]
    shards: Sequence[str]
    labels: Sequence[int]
    images: Any


class SampleSource(Protocol):
    """A finite, indexed set of samples that can be read in batches.

    Implementations guarantee that every sample appears exactly once across ``batches``
    whatever the batch size and worker count, so that per-sample results do not depend on them.
    """

    def __len__(self) -> int: ...

    @property
    def keys(self) -> Sequence[str]:
        """Keys of every sample in the source, in index order."""
        ...

    def batches(
        self,
        *,
        batch_size: int,
        num_workers: int = 0,
        transform: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
    ) -> Iterator[SampleBatch]: ...

    def subset(self, keys: Sequence[str]) -> SampleSource:
        """The samples whose keys are in ``keys`` (used to skip work already committed)."""
        ...
