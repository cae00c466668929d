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
from mill.core.errors import SpecError
from mill.core.spec import (
    ClassesSpec,
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
    inline: tuple[str, ...] | None, relative: str | None, file: Path, key: str, inline_key: str
) -> tuple[tuple[str, ...], bytes]:
    if (inline is None) == (relative is None):
        raise SpecError(f"{file}: {key}: give exactly one of '{inline_key}' (inline) or 'file'")
    if inline is not None:
        return inline, b""
    assert relative is not None
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
    names, raw = _inline_or_file(classes.names, classes.file, file, "classes", "names")
    if len(names) != classes.count:
        raise SpecError(f"{file}: classes: declares count = {classes.count} but lists {len(names)} names")
    resolved = list(names)
    for index_text, name in classes.overrides.items():
        if not index_text.isdigit() or int(index_text) >= len(resolved):
            raise SpecError(f"{file}: classes.overrides.{index_text}: expected a class index in [0, {len(resolved)})")
        resolved[int(index_text)] = name
    if not classes.allow_duplicates:
        seen: dict[str, int] = {}
        for index, name in enumerate(resolved):
            if name in seen:
                raise SpecError(
                    f"{file}: classes: duplicate class name {name!r} at indices {seen[name]} and {index} "
                    "(after overrides); rename one with classes.overrides, or set "
                    "classes.allow_duplicates = true to keep the list as published"
                )
            seen[name] = index
    return tuple(resolved), raw


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
    """The prompt templates (none for a benchmark without class labels) and their file's bytes."""
    templates: tuple[str, ...] = ()
    raw = b""
    if templates_spec is not None:
        templates, raw = _inline_or_file(templates_spec.list, templates_spec.file, file, "templates", "list")
        if not templates:
            where = "templates.list" if templates_spec.list is not None else f"templates.file: {templates_spec.file}"
            raise SpecError(f"{file}: {where}: no template; give at least one, with a {{c}} placeholder")
    for index, template in enumerate(templates):
        if "{c}" not in template:
            raise SpecError(f"{file}: templates[{index}]: {template!r} lacks the {{c}} placeholder")
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
    variants = {name: _variant(name, value, file, len(classes.names)) for name, value in variants_data.items()}
    templates, templates_raw = _templates(parsed.templates, file)
    _check_variants(parsed, variants, file)
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
    )
