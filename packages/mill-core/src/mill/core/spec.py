"""Benchmark specs: what a TOML spec file declares, as frozen attrs classes (:mod:`mill.core.specfile` reads them).

A spec declares everything a benchmark needs (dataset, class names, templates, variants,
reported baselines); nothing benchmark-specific lives in code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from attrs import field, frozen


@runtime_checkable
class Variant(Protocol):
    """What every kind's variant schema (a ``[variants.X]`` table, structured by its kind) has: its kind's name and
    the name of its headline metric."""

    @property
    def kind(self) -> str: ...

    @property
    def metric(self) -> str: ...


@frozen
class DatasetSpec:
    """Where the samples come from and what a sample looks like.

    ``source`` is a URL (``hf://``, ``http(s)://``) or a local folder, relative to the spec file. A sample holds
    an image and a class label (``label_member``, a classification benchmark) or its captions (``text_member``,
    one per line, a retrieval benchmark). With ``metadata_member``, a sample also holds a row of integers (a
    NumPy ``.npy`` array, as DataComp's exports of WILDS and geographic datasets carry), whose entries
    ``metadata_fields`` name in order; they become per-sample columns, and ``group_by`` (one of the fields)
    groups the samples for worst-group metrics.
    """

    source: str
    split: str
    image_member: str
    n_samples: int
    label_member: str | None = None
    text_member: str | None = None
    metadata_member: str | None = None
    metadata_fields: tuple[str, ...] = ()
    group_by: str | None = None


class SubsetLabels(str, enum.Enum):
    """What a dataset's label means for a benchmark whose classes are a subset of a parent list."""

    #: Label ``i`` is the ``i``-th class of the subset.
    SUBSET = "subset"
    #: The label is an index into the parent list; Mill maps it to the class's position in the subset.
    PARENT = "parent"


@frozen
class SubsetSpec:
    """A benchmark whose classes are some of a parent list's: ``file`` holds parent indices, one per line,
    in the benchmark's label order."""

    file: str
    count: int
    labels: SubsetLabels


@frozen
class ProjectionSpec:
    """A benchmark whose classes each gather classes of a parent list that classifiers are trained on (ObjectNet's
    113 over ImageNet-1k's 1000): ``file`` holds, one line per class in label order, the parent indices that map to
    it, separated by spaces; ``parent_count`` is the parent list's size."""

    file: str
    parent_count: int


@frozen
class ClassesSpec:
    """Class names, inline (``names``) or one per line in ``file`` next to the spec; with ``subset``,
    those are the parent list and the benchmark's classes are the subset's; with ``projection``, the names are the
    benchmark's own and each class gathers parent classes (for classifiers trained on the parent list)."""

    count: int
    names: tuple[str, ...] | None = None
    file: str | None = None
    #: A file at the root of the data export (next to its split folder), read when the data is opened.
    export_file: str | None = None
    overrides: dict[str, str] = field(factory=dict)
    allow_duplicates: bool = False
    subset: SubsetSpec | None = None
    projection: ProjectionSpec | None = None


@frozen
class TemplatesSpec:
    """Prompt templates with a ``{c}`` placeholder, inline (``list``), one per line in ``file``, or one per line in
    ``export_file`` at the root of the data export, read when the data is opened."""

    list: tuple[str, ...] | None = None
    file: str | None = None
    export_file: str | None = None


@frozen
class ExportFiles:
    """What a spec reads from its data export when the data is opened, as clip_benchmark's ``wds`` loader does:
    the class names (``classes.export_file``, checked against ``classes``) and the templates file."""

    classes: ClassesSpec | None = None
    templates: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The export's files to read, relative to its root."""
        return tuple(filter(None, (None if self.classes is None else self.classes.export_file, self.templates)))


@frozen
class ReportedBaseline:
    """A published number to compare with: ``model`` is written as Mill's ``model`` column."""

    model: str
    value: float
    source: str
    variant: str | None = None
    metric: str | None = None


@frozen
class SpecFile:
    """The TOML file's shape, before class names and templates are resolved."""

    name: str
    description: str
    seed: int
    headline_metric: str
    dataset: DatasetSpec
    variants: dict[str, dict[str, Any]]
    classes: ClassesSpec | None = None
    templates: TemplatesSpec | None = None
    reported: tuple[ReportedBaseline, ...] = ()


@frozen
class Spec:
    """A validated benchmark: what the rest of Mill consumes.

    ``classnames`` have the overrides applied (empty, like ``templates``, for a benchmark without class
    labels, or until the data is opened for a spec that reads them from its export: ``export``); ``content_hash``
    covers the TOML file and every file it references (the export's, once read), so a changed class list or
    template file changes the run identity.
    """

    name: str
    description: str
    seed: int
    headline_metric: str
    dataset: DatasetSpec
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    variants: Mapping[str, Variant]
    reported: tuple[ReportedBaseline, ...]
    path: Path
    content_hash: str
    #: With ``classes.subset``: the parent index of each class, in label order.
    parent_indices: tuple[int, ...] | None = None
    #: With ``classes.subset.labels = "parent"``: dataset label (a parent index) -> class index.
    label_map: Mapping[int, int] | None = None
    #: With ``classes.subset`` or ``classes.projection``: the parent list's size, which is the number of outputs of
    #: a classifier trained for this benchmark, and per class the parent indices that score it.
    parent_count: int | None = None
    parent_classes: tuple[tuple[int, ...], ...] | None = None
    #: Class names or templates still to be read from the data export (:func:`~mill.core.specfile.with_export_files`);
    #: None when the spec holds them all, or once they are read.
    export: ExportFiles | None = None

    @property
    def n_outputs(self) -> int:
        """How many classes a classifier for this benchmark scores: the parent list's, else the benchmark's."""
        return len(self.classnames) if self.parent_count is None else self.parent_count
