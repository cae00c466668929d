"""What a data source hands to a backend: batches of decoded samples, and the source's contract.

mill-core defines the contract; mill-data implements it (webdataset shards). Keeping the
protocol here lets backends and the runner be typed without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from attrs import frozen

if TYPE_CHECKING:
    from mill.core.spec import Spec


@frozen
class SampleBatch:
    """One batch of samples, in the order the loader produced them.

    ``images`` is whatever the transform returned, collated: a stacked tensor when the
    transform returns tensors (CLIP preprocessing), a list of RGB PIL images when no
    transform is given (generative backends hand PIL images to their processor).

    ``labels`` are class indices, :data:`NO_LABEL` for a dataset without class labels; ``texts`` holds each
    sample's captions for a dataset with them (``dataset.text_member``), None otherwise.
    """

    keys: Sequence[str]
    shards: Sequence[str]
    labels: Sequence[int]
    images: Any
    texts: Sequence[Sequence[str]] | None = None


#: The label of a sample in a dataset without class labels (one whose samples hold captions).
NO_LABEL = -1


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


class ShardRef(Protocol):
    """A shard a dataset reads: its file name, size in bytes and content hash (all enter the run identity, so a
    shard whose content changed, even at the same size, is a new run rather than a resumed one)."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str | None:
        """The hex sha256 of the shard's bytes; None when the data layer has none (a dataset held in memory)."""
        ...

    @property
    def version(self) -> str | None:
        """What a remote shard's server calls the version its copy was downloaded at (``etag:...``,
        ``hf:<commit>``); None for a local file. Recorded, not part of the identity: the content hash is."""
        ...


class Skipped(Protocol):
    """A sample left out because its image could not be read, and why."""

    @property
    def key(self) -> str: ...

    @property
    def shard(self) -> str: ...

    @property
    def reason(self) -> str: ...


class Dataset(SampleSource, Protocol):
    """A benchmark's opened data: its samples, where they came from, and what could not be read.

    ``skipped`` fills while batches are produced (``on_bad_sample="skip"``); ``incomplete`` is True
    when the shards held another number of samples than the spec expects.
    """

    @property
    def source(self) -> str: ...

    @property
    def shards(self) -> Sequence[ShardRef]: ...

    @property
    def incomplete(self) -> bool: ...

    @property
    def skipped(self) -> Sequence[Skipped]: ...

    def subset(self, keys: Sequence[str]) -> Dataset: ...


@runtime_checkable
class ExportReader(Protocol):
    """Opened data that read files from its export's root for the spec (``classes.export_file``,
    ``templates.export_file``), by name, from the export at ``source``."""

    @property
    def source(self) -> str: ...

    @property
    def export_files(self) -> Mapping[str, bytes]: ...


@runtime_checkable
class MetadataReader(Protocol):
    """Opened data whose samples carry a metadata row (``dataset.metadata_member``)."""

    def metadata(self, keys: Sequence[str]) -> Sequence[Sequence[int] | None]:
        """Each of ``keys``' metadata row, None for a sample without one."""
        ...


OnBadSample = Literal["fail", "skip"]


@frozen
class ReadOptions:
    """How a benchmark's data is read: a ``limit`` subset, whether fewer samples than expected are
    allowed, where shard indexes and downloads are cached (None: nowhere), and what an unreadable
    image does."""

    limit: int | None = None
    allow_incomplete: bool = False
    cache_dir: Path | None = None
    on_bad_sample: OnBadSample = "fail"


class DataOpener(Protocol):
    """Opens a spec's data (mill-data implements it): ``data_dir`` overrides the spec's source.

    Raises :class:`mill.core.errors.DataError` for missing, unreachable or malformed data.
    """

    def __call__(self, spec: Spec, data_dir: str | None, options: ReadOptions) -> Dataset: ...
