"""Reading a benchmark spec: a TOML file turned, once and at the boundary, into a :class:`~mill.core.spec.Spec`.

Errors name the file and the dotted key path and say what was expected, e.g.
``specs/imagenet.toml: variants.imagenet_mcq.max_new_tokens: expected an integer, got '32x'``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from attrs import evolve, frozen

from mill.core.arguments import SEEDS
from mill.core.convert import structure
from mill.core.errors import DataError, SpecError
from mill.core.sample import ExportReader
from mill.core.spec import (
    ClassesSpec,
    DatasetSpec,
    ExportFiles,
    ProjectionSpec,
    Spec,
    SpecFile,
    SubsetLabels,
    SubsetSpec,
    TemplatesSpec,
    Variant,
)
from mill.core.task_kind import UnknownKindError, get_kind
from mill.core.tomlfile import read_toml

_T = TypeVar("_T")

#: What a name from a spec (benchmark, variant) may be: it becomes part of file names under the output
#: directory, so no path separator, no leading dot (``..``), nothing a shell or file system treats specially.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def check_name(name: object, file: Path, key: str) -> str:
    """``name`` if it is a valid name (:data:`NAME_PATTERN`).

    Raises:
        SpecError: naming the file and ``key`` that hold it.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SpecError(
            f"{file}: {key}: {name!r} is not a valid name; use letters, digits, '_', '.', '+' or '-' "
            "(at most 100, the first a letter or digit): it becomes part of file names under the output directory"
        )
    return name


def structure_in_file(data: Any, cls: type[_T], file: Path, path: str) -> _T:
    """``data``, read from the TOML file ``file``, structured into ``cls``.

    Raises:
        SpecError: one line per bad key, each naming ``file`` and the key's dotted path under ``path``.
    """
    try:
        return structure(data, cls, path=path)
    except ValueError as exc:
        lines = [
            f"{line}; check the spelling against docs/specs.md" if "unknown key(s)" in line else line
            for line in str(exc).splitlines()
        ]
        raise SpecError("\n".join(f"{file}: {line}" for line in lines)) from None


def _variant(name: str, data: dict[str, Any], file: Path, n_classes: int) -> Variant:
    """A ``[variants.name]`` table structured by its kind's schema and checked by its kind."""
    path = f"variants.{name}"
    check_name(name, file, f"variants.{json.dumps(name)}")  # quoted as TOML would, for any character
    if not isinstance(data, dict):
        raise SpecError(f"{file}: {path}: expected a table, got {data!r}")
    try:
        kind = get_kind(data.get("kind"))  # type: ignore[arg-type]
    except UnknownKindError as exc:
        raise SpecError(f"{file}: {path}.kind: {exc}") from None
    variant: Variant = structure_in_file(data, kind.variant_type, file, path)
    problems = kind.check_variant(variant, n_classes)
    if problems:
        raise SpecError("\n".join(f"{file}: {path}.{key}: {message}" for key, message in problems))
    return variant


def _read_lines(file: Path, relative: str, key: str) -> tuple[tuple[str, ...], bytes]:
    target = file.parent / relative
    try:
        raw = target.read_bytes()
    except OSError as exc:
        raise SpecError(
            f"{file}: {key}: cannot read {target} ({exc.strerror}); the path is relative to the spec file"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{file}: {key}: {target} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    lines = tuple(line.strip() for line in text.splitlines() if line.strip())
    return lines, raw


def _inline_or_file(
    inline: tuple[str, ...] | None,
    relative: str | None,
    file: Path,
    key: str,
    inline_key: str,
    export_file: str | None = None,
) -> tuple[tuple[str, ...], bytes]:
    """The lines given inline or in ``relative`` (and that file's bytes); none yet for an ``export_file``."""
    if sum(value is not None for value in (inline, relative, export_file)) != 1:
        raise SpecError(
            f"{file}: {key}: give exactly one of '{inline_key}' (inline), 'file' or 'export_file' "
            "(a file of the data export, read when the data is opened)"
        )
    if inline is not None:
        return inline, b""
    if relative is None:
        return (), b""
    return _read_lines(file, relative, f"{key}.file")


def _check_targets(spec: SpecFile, file: Path) -> None:
    """A sample's target is a class label (with class names and templates) or captions (with neither)."""
    dataset = spec.dataset
    if dataset.label_member is None and dataset.text_member is None:
        raise SpecError(
            f"{file}: dataset: name the member holding each sample's target: label_member (a class index, "
            "e.g. 'cls') or text_member (captions, one per line, e.g. 'txt')"
        )
    if dataset.label_member is not None:
        for key, value in (("classes", spec.classes), ("templates", spec.templates)):
            if value is None:
                raise SpecError(f"{file}: {key}: a dataset with class labels (dataset.label_member) needs [{key}]")
    else:
        for key, value in (("classes", spec.classes), ("templates", spec.templates)):
            if value is not None:
                raise SpecError(
                    f"{file}: {key}: a dataset without class labels (no dataset.label_member) has no [{key}]; "
                    "remove the table, or name the label member"
                )


def _classnames(classes: ClassesSpec, file: Path) -> tuple[tuple[str, ...], bytes]:
    names, raw = _inline_or_file(classes.names, classes.file, file, "classes", "names", classes.export_file)
    if classes.export_file is not None:
        if classes.subset is not None or classes.projection is not None:
            raise SpecError(f"{file}: classes: 'export_file' takes no 'subset' or 'projection'")
        return (), b""
    return checked_classnames(names, classes, str(file)), raw


def checked_classnames(names: tuple[str, ...], classes: ClassesSpec, where: str) -> tuple[str, ...]:
    """``names`` with ``classes.overrides`` applied, after checking their count and (unless allowed) that no two
    are alike.

    Raises:
        SpecError: prefixed with ``where`` (the spec file, or the export file the names came from).
    """
    if len(names) != classes.count:
        raise SpecError(f"{where}: classes: declares count = {classes.count} but lists {len(names)} names")
    resolved = list(names)
    for index_text, name in classes.overrides.items():
        if not index_text.isdigit() or int(index_text) >= len(resolved):
            raise SpecError(f"{where}: classes.overrides.{index_text}: expected a class index in [0, {len(resolved)})")
        resolved[int(index_text)] = name
    if not classes.allow_duplicates:
        seen: dict[str, int] = {}
        for index, name in enumerate(resolved):
            if name in seen:
                raise SpecError(
                    f"{where}: classes: duplicate class name {name!r} at indices {seen[name]} and {index} "
                    "(after overrides); rename one with classes.overrides, or set "
                    "classes.allow_duplicates = true to keep the list as published"
                )
            seen[name] = index
    return tuple(resolved)


def _subset(
    subset: SubsetSpec, parent: tuple[str, ...], file: Path
) -> tuple[tuple[str, ...], tuple[int, ...], dict[int, int] | None, bytes]:
    """The subset's names, parent indices and (for parent labels) label map, and the subset file's bytes."""
    lines, raw = _read_lines(file, subset.file, "classes.subset.file")
    if len(lines) != subset.count:
        raise SpecError(f"{file}: classes.subset: declares count = {subset.count} but lists {len(lines)} indices")
    indices = []
    for line_no, text in enumerate(lines, start=1):
        if not text.isdigit() or int(text) >= len(parent):
            raise SpecError(
                f"{file}: classes.subset.file: line {line_no} of {subset.file}: expected a parent class index "
                f"in [0, {len(parent)}), got {text!r}"
            )
        indices.append(int(text))
    if len(set(indices)) != len(indices):
        raise SpecError(f"{file}: classes.subset.file: {subset.file} names a parent class more than once")
    label_map = None
    if subset.labels is SubsetLabels.PARENT:
        label_map = {parent_index: position for position, parent_index in enumerate(indices)}
    return tuple(parent[i] for i in indices), tuple(indices), label_map, raw


def _projection(projection: ProjectionSpec, n_classes: int, file: Path) -> tuple[tuple[tuple[int, ...], ...], bytes]:
    """Per class, the parent indices of ``projection.file`` (each parent in at most one class), and its bytes."""
    key = "classes.projection.file"
    lines, raw = _read_lines(file, projection.file, key)
    if len(lines) != n_classes:
        raise SpecError(
            f"{file}: {key}: {projection.file} has {len(lines)} lines, expected one per class ({n_classes})"
        )
    classes = []
    owner: dict[int, int] = {}
    for line_no, text in enumerate(lines, start=1):
        fields = text.split()
        if not all(f.isdigit() and int(f) < projection.parent_count for f in fields):
            raise SpecError(
                f"{file}: {key}: line {line_no} of {projection.file}: expected parent class indices in "
                f"[0, {projection.parent_count}) separated by spaces, got {text!r}"
            )
        for parent in map(int, fields):
            if parent in owner:
                raise SpecError(
                    f"{file}: {key}: {projection.file} maps parent class {parent} to lines {owner[parent] + 1} "
                    f"and {line_no}; a parent class belongs to one class at most"
                )
            owner[parent] = line_no - 1
        classes.append(tuple(map(int, fields)))
    return tuple(classes), raw


def _check_variants(spec: SpecFile, variants: Mapping[str, Variant], file: Path) -> None:
    if not variants:
        raise SpecError(f"{file}: variants: a spec needs at least one variant")
    metrics = {v.metric for v in variants.values()}
    if spec.headline_metric not in metrics | {"acc"}:
        raise SpecError(f"{file}: headline_metric: {spec.headline_metric!r} is no variant's metric")


@frozen
class _Classes:
    """A spec's resolved classes (none for a benchmark without class labels) and the bytes of the files they were
    read from; the parent list's fields are set with ``classes.subset`` or ``classes.projection``."""

    names: tuple[str, ...] = ()
    raw: bytes = b""
    #: The subset or projection file's bytes; b"" without one.
    parent_raw: bytes = b""
    parent_indices: tuple[int, ...] | None = None
    label_map: dict[int, int] | None = None
    parent_count: int | None = None
    parent_classes: tuple[tuple[int, ...], ...] | None = None


def _resolve_classes(classes: ClassesSpec | None, file: Path) -> _Classes:
    if classes is None:
        return _Classes()
    names, raw = _classnames(classes, file)
    if classes.subset is not None and classes.projection is not None:
        raise SpecError(f"{file}: classes: give at most one of 'subset' and 'projection'")
    if classes.subset is not None:
        subset_names, indices, label_map, subset_raw = _subset(classes.subset, names, file)
        singletons = tuple((index,) for index in indices)
        return _Classes(subset_names, raw, subset_raw, indices, label_map, len(names), singletons)
    if classes.projection is not None:
        gathered, projection_raw = _projection(classes.projection, len(names), file)
        return _Classes(names, raw, projection_raw, None, None, classes.projection.parent_count, gathered)
    return _Classes(names, raw)


def _templates(templates_spec: TemplatesSpec | None, file: Path) -> tuple[tuple[str, ...], bytes]:
    """The prompt templates (none for a benchmark without class labels, none yet for an ``export_file``) and their
    file's bytes."""
    if templates_spec is None:
        return (), b""
    templates, raw = _inline_or_file(
        templates_spec.list, templates_spec.file, file, "templates", "list", templates_spec.export_file
    )
    if not templates and templates_spec.export_file is None:
        where = "templates.list" if templates_spec.list is not None else f"templates.file: {templates_spec.file}"
        raise SpecError(f"{file}: {where}: no template; give at least one, with a {{c}} placeholder")
    _check_placeholders(templates, f"{file}: templates")
    return templates, raw


def load_spec(file: Path) -> Spec:
    """Read and validate one spec file.

    Raises:
        SpecError: naming the file (and line for TOML syntax errors, dotted key path otherwise).
    """
    data, raw = read_toml(file, "spec", SpecError)
    variants_data = data.get("variants")
    parsed = structure_in_file(data, SpecFile, file, "")
    assert isinstance(variants_data, dict)
    _check_targets(parsed, file)
    check_name(parsed.name, file, "name")
    seed_problem = SEEDS.problem(parsed.seed)
    if seed_problem:
        raise SpecError(f"{file}: seed: {seed_problem}")
    classes = _resolve_classes(parsed.classes, file)
    export = _export_files(parsed)
    n_classes = export.classes.count if export is not None and export.classes is not None else len(classes.names)
    variants = {name: _variant(name, value, file, n_classes) for name, value in variants_data.items()}
    templates, templates_raw = _templates(parsed.templates, file)
    _check_variants(parsed, variants, file)
    _check_metadata(parsed.dataset, file)
    dataset = parsed.dataset
    if "://" not in dataset.source and not Path(dataset.source).is_absolute():
        # A local source written in a spec is relative to the spec file, like its class and
        # template files, so a bundled benchmark works wherever the package is installed.
        dataset = evolve(dataset, source=str(file.parent / dataset.source))
    digest = hashlib.sha256()
    # The subset or projection file's digest joins only when there is one, so existing specs keep their hash.
    parent_part = (classes.parent_raw,) if classes.parent_classes is not None else ()
    for part in (raw, classes.raw, templates_raw, *parent_part):
        digest.update(hashlib.sha256(part).digest())
    return Spec(
        name=parsed.name,
        description=parsed.description,
        seed=parsed.seed,
        headline_metric=parsed.headline_metric,
        dataset=dataset,
        classnames=classes.names,
        templates=templates,
        variants=variants,
        reported=parsed.reported,
        path=file,
        content_hash=digest.hexdigest(),
        parent_indices=classes.parent_indices,
        label_map=classes.label_map,
        parent_count=classes.parent_count,
        parent_classes=classes.parent_classes,
        export=export,
    )


def _export_files(spec: SpecFile) -> ExportFiles | None:
    classes = spec.classes if spec.classes is not None and spec.classes.export_file is not None else None
    templates = None if spec.templates is None else spec.templates.export_file
    return None if classes is None and templates is None else ExportFiles(classes, templates)


def _check_placeholders(templates: tuple[str, ...], where: str) -> None:
    for index, template in enumerate(templates):
        if "{c}" not in template:
            raise SpecError(f"{where}[{index}]: {template!r} lacks the {{c}} placeholder")


#: Columns of a per-sample file that a metadata field may not be named as.
_RESERVED_COLUMNS = frozenset(
    {"key", "shard", "gold", "gold_label", "prediction", "prediction_label", "correct", "group", "metadata"}
)


def _check_metadata(dataset: DatasetSpec, file: Path) -> None:
    """``metadata_member`` and ``metadata_fields`` come together, and each field can name a per-sample column."""
    if (dataset.metadata_member is None) != (not dataset.metadata_fields):
        raise SpecError(
            f"{file}: dataset: give metadata_member (the member holding each sample's metadata row, e.g. 'npy') "
            "and metadata_fields (a name for each entry of the row) together"
        )
    for index, name in enumerate(dataset.metadata_fields):
        if not name.isidentifier() or name in _RESERVED_COLUMNS or re.fullmatch(r"top\d+", name):
            raise SpecError(
                f"{file}: dataset.metadata_fields[{index}]: {name!r} cannot name a per-sample column; use a "
                f"Python identifier other than {', '.join(sorted(_RESERVED_COLUMNS))} and top<k>"
            )
    if len(set(dataset.metadata_fields)) != len(dataset.metadata_fields):
        raise SpecError(f"{file}: dataset.metadata_fields: a name appears twice")
    if dataset.group_by is not None and dataset.group_by not in dataset.metadata_fields:
        raise SpecError(
            f"{file}: dataset.group_by: {dataset.group_by!r} is not one of dataset.metadata_fields "
            f"({', '.join(dataset.metadata_fields) or 'none'})"
        )


def with_export_files(spec: Spec, files: Mapping[str, bytes], where: str) -> Spec:
    """``spec`` with the class names and templates it reads from its data export, given as ``files`` (the bytes
    of each of ``spec.export.names``, read from the export at ``where``); its ``content_hash`` then covers them,
    so a changed ``classnames.txt`` is a new run. A spec without export files is returned as it is.

    Raises:
        SpecError: a file is missing from ``files``, is not UTF-8, or its names or templates fail the spec's
            checks (count, duplicates, the ``{c}`` placeholder); the message names the export file.
    """
    export = spec.export
    if export is None:
        return spec
    lines = {}
    for name in export.names:
        if name not in files:
            raise SpecError(f"{where}/{name}: missing; {spec.name}'s spec reads it from the export")
        try:
            text = files[name].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"{where}/{name}: not UTF-8 text (byte {exc.start})") from None
        lines[name] = tuple(line.strip() for line in text.splitlines() if line.strip())
    classnames, templates = spec.classnames, spec.templates
    if export.classes is not None and export.classes.export_file is not None:
        classnames = checked_classnames(
            lines[export.classes.export_file], export.classes, f"{where}/{export.classes.export_file}"
        )
    if export.templates is not None:
        templates = lines[export.templates]
        if not templates:
            raise SpecError(f"{where}/{export.templates}: no template")
        _check_placeholders(templates, f"{where}/{export.templates}: templates")
    digest = hashlib.sha256(spec.content_hash.encode())
    for name in export.names:
        digest.update(hashlib.sha256(name.encode() + b"\0" + files[name]).digest())
    return evolve(spec, classnames=classnames, templates=templates, content_hash=digest.hexdigest(), export=None)


def spec_as_opened(spec: Spec, data: object) -> Spec:
    """``spec`` with the class names and templates that its opened ``data`` read from the export
    (:func:`with_export_files`); ``spec`` itself when it reads none.

    Raises:
        DataError: ``data`` read no export files for a spec that needs them (a data opener without the feature).
        SpecError: as :func:`with_export_files`.
    """
    if spec.export is None:
        return spec
    if not isinstance(data, ExportReader):
        raise DataError(
            f"{spec.name} reads {', '.join(spec.export.names)} from its data export, but its data was opened by a "
            "reader that does not read them; open it with mill-data"
        )
    return with_export_files(spec, data.export_files, data.source)
