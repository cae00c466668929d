"""A dataset of webdataset shards: indexed samples read in batches by a torch DataLoader (:mod:`mill.data.loader`).

``open_dataset`` resolves a source to shard files, indexes them, checks the samples (labels, unique keys,
completeness) and picks the ``limit`` subset, all before any image is decoded; ``ShardDataset.batches``
then reads images by offset. Workers split the selected samples, not the shards, because the real export
has a few large shards: whole-shard splitting would leave most workers idle.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen

from mill.core.errors import DataError, SpecError
from mill.core.sample import NO_LABEL, OnBadSample, ReadOptions, SampleBatch
from mill.core.spec import DatasetSpec, Spec
from mill.core.specfile import with_export_files
from mill.data.index import IMAGE_EXTENSIONS, IndexedSample, Member, ShardIndex, index_shard
from mill.data.samples import SampleRef, SkippedSample
from mill.data.source import ShardInfo, choose_source, read_export_files, resolve_shards

#: How many shard names an error message lists before eliding the rest.
_NAMES_SHOWN = 8


@frozen(eq=False)
class ShardDataset:
    """The selected samples of a split, in index order (shard order, then order within the shard).

    ``incomplete`` is True when the shards held a different number of samples than the spec expects (only
    possible with ``allow_incomplete`` or ``limit``); ``limit`` is the requested subset size or None.
    ``skipped`` collects samples skipped while batching with ``on_bad_sample="skip"``; it is the one
    mutable part, filled as batches are produced.
    """

    source: str
    shards: tuple[ShardInfo, ...]
    samples: tuple[SampleRef, ...]
    n_indexed: int
    incomplete: bool = False
    limit: int | None = None
    on_bad_sample: OnBadSample = "fail"
    skipped: list[SkippedSample] = field(factory=list)
    #: The files read from the export's root for the spec (its ``classnames.txt``, templates), by name.
    export_files: Mapping[str, bytes] = field(factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def keys(self) -> Sequence[str]:
        return tuple(s.key for s in self.samples)

    @property
    def labels(self) -> Sequence[int]:
        return tuple(s.label for s in self.samples)

    def metadata(self, keys: Sequence[str]) -> list[tuple[int, ...] | None]:
        """Each of ``keys``' metadata row (None for a dataset without ``metadata_member``)."""
        rows = {s.key: s.metadata for s in self.samples}
        return [rows[key] for key in keys]

    def subset(self, keys: Sequence[str]) -> ShardDataset:
        """The samples whose keys are in ``keys``, still in index order; unknown keys are ignored."""
        wanted = set(keys)
        return attrs.evolve(self, samples=tuple(s for s in self.samples if s.key in wanted), skipped=[])

    def batches(
        self,
        *,
        batch_size: int,
        num_workers: int = 0,
        transform: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
    ) -> Iterator[SampleBatch]:
        """Every selected sample exactly once, decoded to RGB and passed through ``transform`` in the worker.

        Images of a batch are stacked when the transform returns tensors, else left as a list of PIL images.
        With ``num_workers=0`` everything runs in this process.

        Raises:
            DataError: an image cannot be decoded (names shard and key), unless ``on_bad_sample="skip"``.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        # torch (through the DataLoader) is imported only once images are read, so that planning a run,
        # listing benchmarks or collecting results never pays for it.
        from mill.data.loader import load_batches

        for keys, shards, labels, images, texts, skipped in load_batches(
            self.samples,
            batch_size=batch_size,
            num_workers=num_workers,
            transform=transform,
            on_bad_sample=self.on_bad_sample,
            pin_memory=pin_memory,
        ):
            self.skipped.extend(skipped)
            if keys:
                yield SampleBatch(keys=keys, shards=shards, labels=labels, images=images, texts=texts)


def open_spec_data(spec: Spec, data_dir: str | None, options: ReadOptions) -> ShardDataset:
    """The samples of ``spec`` (mill-core's :class:`~mill.core.sample.DataOpener`): from ``data_dir`` when
    given, else ``$MILL_DATA_DIR/<benchmark>``, else the spec's own source. A spec that reads its class names or
    templates from the export (``export_file``) gets them here, after the shards are found: the dataset's
    ``export_files`` hold them, and the labels are checked against the classes they name.

    Raises:
        DataError: as :func:`open_dataset`, or an export file is missing, unreadable or fails the spec's checks.
    """
    source = choose_source(data_dir, spec.name, spec.dataset.source)
    shards = None
    files: dict[str, bytes] = {}
    if spec.export is not None:
        dataset = spec.dataset
        shards = resolve_shards(
            source,
            split=dataset.split,
            cache_dir=options.cache_dir,
            benchmark=spec.name,
            export_files=spec.export.names,
        )
        files = read_export_files(
            source, spec.export.names, split=dataset.split, cache_dir=options.cache_dir, benchmark=spec.name
        )
        try:
            spec = with_export_files(spec, files, source)
        except SpecError as error:
            raise DataError(str(error)) from None
    opened = open_dataset(
        spec.dataset,
        n_classes=len(spec.classnames),
        options=options,
        source=source,
        benchmark=spec.name,
        label_map=spec.label_map,
        shards=shards,
    )
    return attrs.evolve(opened, export_files=files)


def open_dataset(
    dataset: DatasetSpec,
    *,
    n_classes: int,
    options: ReadOptions,
    source: str | None = None,
    benchmark: str | None = None,
    label_map: Mapping[int, int] | None = None,
    shards: Sequence[ShardInfo] | None = None,
) -> ShardDataset:
    """Resolve ``source`` (default: the spec's) unless its ``shards`` are given, index them and select the samples
    to evaluate, with their metadata rows when the dataset has a ``metadata_member``.

    ``options.limit`` picks N samples spread evenly over the whole index (shards are class-ordered, so the
    first N would cover few classes); the choice depends only on the index, so it is the same in every run.
    ``benchmark`` only improves the message when the data is missing. ``label_map`` (a spec's
    ``classes.subset`` with parent labels) turns each stored label into a class index first.

    Raises:
        DataError: the source is missing or unreachable; a shard is corrupt; a sample lacks its image or
            label, has a label outside ``[0, n_classes)`` or repeats another's key; the sample count differs
            from the spec's ``n_samples`` (without ``limit`` or ``allow_incomplete``).
    """
    source = dataset.source if source is None else source
    limit, on_bad_sample = options.limit, options.on_bad_sample
    if limit is not None and limit <= 0:
        raise DataError(f"--limit must be a positive number of samples, got {limit}")
    if on_bad_sample not in ("fail", "skip"):
        raise DataError(f"on_bad_sample must be 'fail' or 'skip', got {on_bad_sample!r}")
    if shards is None:
        shards = resolve_shards(source, split=dataset.split, cache_dir=options.cache_dir, benchmark=benchmark)
    indexed, samples = _index_shards(shards, dataset, n_classes, label_map, options.cache_dir)
    total = len(samples)
    names = ", ".join(s.name for s in shards[:_NAMES_SHOWN]) + (", ..." if len(shards) > _NAMES_SHOWN else "")
    if total == 0:
        raise DataError(f"shards {names} from {source} hold no samples")
    incomplete = total != dataset.n_samples
    if incomplete and limit is None and not options.allow_incomplete:
        raise DataError(
            f"found {total} samples in {len(shards)} shard(s) ({names}) from {source}, expected {dataset.n_samples}: "
            "a shard may be missing or partly downloaded. Re-download the data, or pass --allow_incomplete to "
            "evaluate the samples that are there (results are then marked incomplete)."
        )
    if limit is not None:
        samples = [samples[i] for i in spread_indices(total, limit)]
    return ShardDataset(
        source=source,
        shards=tuple(indexed),
        samples=tuple(samples),
        n_indexed=total,
        incomplete=incomplete,
        limit=limit,
        on_bad_sample=on_bad_sample,
    )


def _index_shards(
    shards: Sequence[ShardInfo],
    dataset: DatasetSpec,
    n_classes: int,
    label_map: Mapping[int, int] | None,
    cache_dir: Path | None,
) -> tuple[list[ShardInfo], list[SampleRef]]:
    """Each shard as indexed (with its content hash, which the run identity records) and every sample of them,
    in shard order, with its metadata row when the dataset has one.

    Raises:
        DataError: as :func:`select_samples` and :func:`with_metadata`, or a key appears in two shards.
    """
    samples: list[SampleRef] = []
    shard_of_key: dict[str, str] = {}
    indexed = []
    for shard in shards:
        index = index_shard(shard, label_member=dataset.label_member, cache_dir=cache_dir)
        indexed.append(index.shard)
        selected = select_samples(
            index,
            image_member=dataset.image_member,
            label_member=dataset.label_member,
            n_classes=n_classes,
            label_map=label_map,
            text_member=dataset.text_member,
        )
        if dataset.metadata_member is not None:
            selected = with_metadata(selected, index, dataset.metadata_member, len(dataset.metadata_fields))
        for ref in selected:
            first = shard_of_key.setdefault(ref.key, ref.shard)
            if first != ref.shard:
                raise DataError(
                    f"sample key {ref.key!r} appears in shard {first} and in shard {ref.shard}: keys must be "
                    "unique across the dataset; remove the duplicate shard from the data directory"
                )
            samples.append(ref)
    return indexed, samples


def spread_indices(total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(total)``: ``floor(i * total / n)`` (all if ``n >= total``)."""
    if n >= total:
        return list(range(total))
    return [i * total // n for i in range(n)]


def select_samples(
    index: ShardIndex,
    *,
    image_member: str,
    label_member: str | None,
    n_classes: int,
    label_map: Mapping[int, int] | None = None,
    text_member: str | None = None,
) -> list[SampleRef]:
    """Each indexed sample's image member and parsed label (pure); with ``label_map``, the stored label is
    a parent class index and the sample's label is its mapped class index. Without ``label_member`` every
    label is :data:`~mill.core.sample.NO_LABEL`; with ``text_member``, each sample's captions member is kept
    (read with the image, in the batches).

    The image is the member named ``image_member``, failing that the first member whose extension is one of
    ``IMAGE_EXTENSIONS`` (exports differ: ``0.webp``, ``webp``, ``jpg``).

    Raises:
        DataError: a sample has no image, label or text member, or its label is not an integer in
            ``[0, n_classes)``.
    """
    shard = index.shard
    refs = []
    for sample in index.samples:
        where = f"shard {shard.name}, sample {sample.key!r}"
        image = sample.members.get(image_member) or _by_extension(sample.members)
        if image is None:
            raise DataError(
                f"{where} has no image member: expected {image_member!r} or an extension among "
                f"{', '.join(IMAGE_EXTENSIONS)}, found {sorted(sample.members)}; check image_member in the spec"
            )
        text = None
        if text_member is not None:
            text = sample.members.get(text_member)
            if text is None:
                raise DataError(
                    f"{where} has no {text_member!r} captions member (found {sorted(sample.members)}); "
                    "check text_member in the spec"
                )
        label = NO_LABEL if label_member is None else _label(sample, label_member, n_classes, label_map, where)
        refs.append(
            SampleRef(key=sample.key, shard=shard.name, path=str(shard.path), image=image, label=label, text=text)
        )
    return refs


def _label(
    sample: IndexedSample, label_member: str, n_classes: int, label_map: Mapping[int, int] | None, where: str
) -> int:
    """``sample``'s class index, read from its label member (and mapped through ``label_map``)."""
    if sample.label_text is None:
        raise DataError(
            f"{where} has no {label_member!r} label member (found {sorted(sample.members)}); "
            "check label_member in the spec"
        )
    try:
        label = int(sample.label_text)
    except ValueError:
        raise DataError(f"{where}: label {sample.label_text!r} is not an integer class index") from None
    if label_map is not None:
        if label not in label_map:
            raise DataError(
                f"{where}: label {label} is not one of the spec's classes.subset parent indices; the shards hold "
                'a class outside the subset (wrong dataset, or labels = "parent" where they are subset indices)'
            )
        label = label_map[label]
    if not 0 <= label < n_classes:
        raise DataError(
            f"{where}: label {label} is outside [0, {n_classes}); the shards do not match the spec's "
            "classes (wrong dataset or wrong class list)"
        )
    return label


def with_metadata(refs: list[SampleRef], index: ShardIndex, member: str, n_fields: int) -> list[SampleRef]:
    """``refs`` (samples of the shard ``index``) with the metadata row each holds in ``member``: a NumPy ``.npy``
    array of ``n_fields`` integers, as DataComp's exports carry (read by offset, no image decoded).

    Raises:
        DataError: a sample lacks the member, or it is not an array of ``n_fields`` integers.
    """
    members = {sample.key: sample.members for sample in index.samples}
    rows = []
    with index.shard.path.open("rb") as handle:
        for ref in refs:
            where = f"shard {index.shard.name}, sample {ref.key!r}"
            found = members[ref.key].get(member)
            if found is None:
                raise DataError(
                    f"{where} has no {member!r} metadata member (found {sorted(members[ref.key])}); check "
                    "metadata_member in the spec"
                )
            handle.seek(found.offset)
            rows.append(attrs.evolve(ref, metadata=_metadata_row(handle.read(found.size), n_fields, where)))
    return rows


def _metadata_row(data: bytes, n_fields: int, where: str) -> tuple[int, ...]:
    # Imported here: only datasets with metadata need it, and it is a data-layer dependency anyway.
    import numpy as np

    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{where}: its metadata member is not a NumPy .npy array ({exc})") from None
    values = np.asarray(array).reshape(-1)
    numeric = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    if values.size != n_fields or not numeric or not np.all(values == np.round(values)):
        raise DataError(
            f"{where}: its metadata row {values.tolist()} is not {n_fields} integers, one per name of the spec's "
            "dataset.metadata_fields"
        )
    return tuple(int(value) for value in values)


def _by_extension(members: dict[str, Member]) -> Member | None:
    for wanted in IMAGE_EXTENSIONS:
        for ext, member in members.items():
            if ext.rsplit(".", 1)[-1].lower() == wanted:
                return member
    return None
