"""Check a downloaded webdataset export against its spec: names, counts and labels.

Run it after downloading an export (this needs network access; the check itself does not), e.g.:

    hf download clip-benchmark/wds_imagenet-a --repo-type dataset --local-dir data/imagenet_a
    python scripts/check_export.py imagenet_a data/imagenet_a

It checks, and reports every mismatch (exit status 1 if any):

- the number of samples equals the spec's ``dataset.n_samples``, and ``SPLIT/nshards.txt`` (when present)
  equals the number of shards;
- every sample has an image member and an integer label that the spec accepts (a subset index, or a parent
  index of the subset with ``labels = "parent"``), and every class has at least one sample;
- the export's ``classnames.txt`` (clip_benchmark's exports carry one, in label order) names the spec's
  classes in the same order, so the labels mean what the spec says. A spec override (``classes.overrides``)
  shows as a difference and is reported as such, not as an error;
- the export's ``zeroshot_classification_templates.txt``, when present, equals the spec's templates.

The indexing is Mill's own (mill.data), so what passes here is what ``mill eval`` reads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mill.core.errors import MillError
from mill.core.registry import SpecRegistry
from mill.core.sample import ReadOptions
from mill.core.spec import Spec
from mill.core.specfile import spec_as_opened
from mill.data import open_spec_data

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _overridden(spec: Spec) -> set[int]:
    """The class indices whose names the spec's ``classes.overrides`` replaced (mapped through a subset)."""
    parent = {int(i) for i in tomllib.loads(spec.path.read_text(encoding="utf-8"))["classes"].get("overrides", {})}
    if spec.parent_indices is None:
        return parent
    return {position for position, index in enumerate(spec.parent_indices) if index in parent}


def check(spec: Spec, export: Path, cache_dir: Path) -> tuple[list[str], list[str]]:
    """The problems and the notes (expected differences) found in ``export``."""
    problems: list[str] = []
    notes: list[str] = []
    data = open_spec_data(spec, str(export), ReadOptions(allow_incomplete=True, cache_dir=cache_dir))
    spec = spec_as_opened(spec, data)  # with the class names and templates it reads from the export, if any
    if data.n_indexed != spec.dataset.n_samples:
        problems.append(f"{data.n_indexed} samples, the spec expects {spec.dataset.n_samples}")
    nshards = export / spec.dataset.split / "nshards.txt"
    if nshards.is_file() and int(nshards.read_text().strip()) != len(data.shards):
        problems.append(f"{nshards} says {nshards.read_text().strip()} shards, found {len(data.shards)}")
    counts = Counter(data.labels)
    empty = [i for i in range(len(spec.classnames)) if counts[i] == 0]
    if empty:
        problems.append(f"{len(empty)} classes have no sample, e.g. {[spec.classnames[i] for i in empty[:5]]}")
    classnames = export / "classnames.txt"
    if classnames.is_file():
        theirs = _lines(classnames)
        if len(theirs) != len(spec.classnames):
            problems.append(f"classnames.txt lists {len(theirs)} classes, the spec {len(spec.classnames)}")
        else:
            overridden = _overridden(spec)
            for index, (ours, published) in enumerate(zip(spec.classnames, theirs, strict=True)):
                if ours != published:
                    line = f"class {index}: spec {ours!r}, export {published!r}"
                    (notes if index in overridden else problems).append(line)
    else:
        notes.append("no classnames.txt in the export: label meaning checked by count and range only")
    templates = export / "zeroshot_classification_templates.txt"
    if templates.is_file() and tuple(_lines(templates)) != spec.templates:
        problems.append("zeroshot_classification_templates.txt differs from the spec's templates")
    return problems, notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", help="benchmark name (mill ls) or spec file")
    parser.add_argument("export", type=Path, help="the downloaded export's root (holds SPLIT/*.tar)")
    args = parser.parse_args(argv)
    try:
        spec = SpecRegistry.discover().select(args.benchmark).spec
        with tempfile.TemporaryDirectory() as cache:
            problems, notes = check(spec, args.export, Path(cache))
    except MillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"MISMATCH: {problem}")
    print(f"{spec.name}: {'OK' if not problems else f'{len(problems)} mismatch(es)'} ({args.export})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
