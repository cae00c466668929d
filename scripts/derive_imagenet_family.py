"""Derive the class files of the ImageNet-family specs from their published sources (re-runnable).

What it derives, and from where:

- ``specs/imagenet_{a,r,o}_subset.txt``: the 200 ImageNet-1k class indices (one per line, in label order) of
  ImageNet-A, -R and -O, from the wnid lists in the installed clip_benchmark package
  (``clip_benchmark/datasets/builder.py``: ``imagenet_a_wnids`` etc. inside ``build_dataset``, masked against
  the module's ``all_imagenet_wordnet_ids``). clip_benchmark labels these sets with torchvision's
  ``ImageFolder`` over the 200 wnid folders, i.e. by sorted wnid; the parent list is sorted too, so label ``i``
  is the ``i``-th subset index. The script checks that ordering instead of assuming it.
- ``specs/objectnet_classnames.txt``: ObjectNet's 113 classes that overlap ImageNet-1k, in clip_benchmark's
  label order (sorted folder name) and spelling (ObjectNet's label, lower-cased), computed by clip_benchmark's
  own ``clip_benchmark.datasets.objectnet.get_metadata`` on ObjectNet's mapping files as published by
  mlfoundations/wise-ft (MIT licence) at commit :data:`WISE_FT_COMMIT`, ``src/datasets/objectnet_metadata/``
  (the files come from ObjectNet's own ``mappings/`` folder). Each file's SHA-256 is checked.
- ``specs/objectnet_projection.txt``: for each of those 113 classes (one line each, same order), the ImageNet-1k
  (pytorch) indices that map to it, ascending and separated by spaces, from the same ``get_metadata`` call
  (its ``folder_to_ids``): how a classifier trained on ImageNet-1k scores ObjectNet (wise-ft's ``project_logits``).

It also checks that the ImageNet-1k class names clip_benchmark uses (``en_classnames.json``, ``imagenet1k``)
are ``specs/imagenet_classnames.txt`` line for line, and that the templates clip_benchmark uses for each of the
six sets (none has its own entry, so all fall back to ``imagenet1k``) are ``specs/imagenet_templates.txt``.

    python scripts/derive_imagenet_family.py                         # fetch the ObjectNet files from GitHub
    python scripts/derive_imagenet_family.py --objectnet-metadata DIR   # or read them from a local copy
    python scripts/derive_imagenet_family.py --check                 # exit 1 if a file in specs/ differs

Needs clip-benchmark (pip install clip-benchmark); the ObjectNet part needs network access
to raw.githubusercontent.com unless ``--objectnet-metadata`` is given.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"

#: ObjectNet's mapping files, as mlfoundations/wise-ft publishes them (MIT licence).
WISE_FT_REPOSITORY = "https://github.com/mlfoundations/wise-ft"
WISE_FT_COMMIT = "58b7a4b343b09dc06606aa929c2ef51accced8d1"
WISE_FT_FOLDER = "src/datasets/objectnet_metadata"
OBJECTNET_FILES = {
    "folder_to_objectnet_label.json": "ccef32f7421b23619fd55bdbd58f3dc2f323d18e169e37bce94326a601de90db",
    "objectnet_to_imagenet_1k.json": "9a6e167524548a653a8ec7f149d9f0880346f6d0218136f41ae57c37c8deac97",
    "pytorch_to_imagenet_2012_id.json": "2aa72a1bc3824ebc7505db2411fa345ce39c739241aead5274e6aca771219746",
    "imagenet_to_label_2012_v2": "b637cd5d3901e889a8b041b928b3e61e4274f3b8a60a8d72d7c8c935699d63b5",
}
#: clip_benchmark's names of the six sets (its ``imagenet_robustness`` collection plus ImageNet-O).
CLIP_BENCHMARK_SETS = ("imagenetv2", "imagenet_sketch", "imagenet-a", "imagenet-r", "imagenet-o", "objectnet")
#: The wnid list variables inside clip_benchmark's ``build_dataset``, by output file.
SUBSETS = {
    "imagenet_a_subset.txt": "imagenet_a_wnids",
    "imagenet_r_subset.txt": "imagenet_r_wnids",
    "imagenet_o_subset.txt": "imagenet_o_wnids",
}
SUBSET_SIZE = 200
OBJECTNET_SIZE = 113


#: The line a spec's open_clip figures start at (scripts/derive_openclip_reported.py writes them, to the end of the
#: file): a script that derives the rest of the spec keeps them.
REPORTED_BLOCK_START = "# open_clip's published figures"


class DerivationError(Exception):
    """A source does not say what the specs rely on."""


def clip_benchmark_datasets_dir() -> Path:
    """The installed ``clip_benchmark/datasets`` folder, found without importing it (its builder needs requests)."""
    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or spec.origin is None:
        raise DerivationError("clip_benchmark is not installed: pip install clip-benchmark")
    return Path(spec.origin).parent / "datasets"


def builder_literals(builder: Path) -> dict[str, list[str]]:
    """Every ``name = [...]`` / ``name = {...}`` assignment of string literals in builder.py, by name."""
    tree = ast.parse(builder.read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        if isinstance(node.value, ast.List | ast.Set):
            try:
                values = ast.literal_eval(node.value)
            except ValueError:
                continue
            if all(isinstance(v, str) for v in values):
                found[node.targets[0].id] = sorted(values) if isinstance(values, set) else list(values)
    return found


def subset_indices(datasets_dir: Path) -> dict[str, list[int]]:
    """The parent (ImageNet-1k) index of every class of A, R and O, in clip_benchmark's label order."""
    literals = builder_literals(datasets_dir / "builder.py")
    parent = literals.get("all_imagenet_wordnet_ids")
    if parent is None or len(parent) != 1000 or len(set(parent)) != 1000:
        raise DerivationError("clip_benchmark's builder.py has no list of the 1000 ImageNet wnids")
    if parent != sorted(parent):
        # ImageFolder labels by sorted folder name; the mask keeps the parent's order. They agree only if sorted.
        raise DerivationError("all_imagenet_wordnet_ids is not sorted: ImageFolder labels would not follow it")
    subsets = {}
    for file, variable in SUBSETS.items():
        wnids = literals.get(variable)
        if wnids is None:
            raise DerivationError(f"clip_benchmark's builder.py no longer defines {variable}")
        missing = set(wnids) - set(parent)
        if missing or len(set(wnids)) != SUBSET_SIZE:
            raise DerivationError(f"{variable}: {len(set(wnids))} wnids, {len(missing)} not among ImageNet's")
        wanted = set(wnids)
        subsets[file] = [index for index, wnid in enumerate(parent) if wnid in wanted]
    return subsets


def check_names_and_templates(datasets_dir: Path) -> None:
    """clip_benchmark's ImageNet names and the templates of the six sets are the files the specs read."""
    names = json.loads((datasets_dir / "en_classnames.json").read_text(encoding="utf-8"))["imagenet1k"]
    ours = read_lines(SPECS / "imagenet_classnames.txt")
    if names != ours:
        raise DerivationError("clip_benchmark's imagenet1k class names differ from specs/imagenet_classnames.txt")
    templates = json.loads((datasets_dir / "en_zeroshot_classification_templates.json").read_text(encoding="utf-8"))
    expected = read_lines(SPECS / "imagenet_templates.txt")
    for name in CLIP_BENCHMARK_SETS:
        # build_dataset looks the set up, then falls back to imagenet1k (default_dataset_for_templates).
        used = templates.get(name, templates["imagenet1k"])
        if used != expected:
            raise DerivationError(f"clip_benchmark's templates for {name} are not specs/imagenet_templates.txt")
    if len(expected) != 80:
        raise DerivationError(f"specs/imagenet_templates.txt holds {len(expected)} templates, not 80")


def fetch_objectnet_metadata(target: Path) -> Path:
    """Download the pinned mapping files into ``target``."""
    base = f"https://raw.githubusercontent.com/mlfoundations/wise-ft/{WISE_FT_COMMIT}/{WISE_FT_FOLDER}"
    for name in OBJECTNET_FILES:
        with urllib.request.urlopen(f"{base}/{name}", timeout=60) as response:
            (target / name).write_bytes(response.read())
    return target


def objectnet_files(metadata: Path) -> dict[str, list[str]]:
    """ObjectNet's overlapping classes as clip_benchmark names and orders them (its own get_metadata), and the
    ImageNet-1k classes that map to each."""
    for name, digest in OBJECTNET_FILES.items():
        actual = hashlib.sha256((metadata / name).read_bytes()).hexdigest()
        if actual != digest:
            raise DerivationError(f"{metadata / name}: SHA-256 {actual}, expected {digest} (wise-ft {WISE_FT_COMMIT})")
    spec = importlib.util.spec_from_file_location("_cb_objectnet", clip_benchmark_datasets_dir() / "objectnet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, _, folders_to_ids, classname_map = module.get_metadata(metadata)
    # As ObjectNetDataset: classes = sorted folders, named by their ObjectNet label, lower-cased.
    names = [classname_map[folder].lower() for folder in sorted(folders_to_ids)]
    if len(names) != OBJECTNET_SIZE or len(set(names)) != OBJECTNET_SIZE:
        raise DerivationError(f"ObjectNet mapping gives {len(names)} classes ({len(set(names))} distinct), not 113")
    parents = [sorted(folders_to_ids[folder]) for folder in sorted(folders_to_ids)]
    flat = [index for indices in parents for index in indices]
    if len(flat) != len(set(flat)) or not all(0 <= index < 1000 for index in flat) or not all(parents):
        raise DerivationError("ObjectNet mapping: an ImageNet class maps to two ObjectNet classes, or a class to none")
    projection = [" ".join(str(index) for index in indices) for indices in parents]
    return {"objectnet_classnames.txt": names, "objectnet_projection.txt": projection}


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def derived_files(objectnet_metadata: Path | None) -> dict[str, list[str]]:
    """Every derived file's lines, by name under specs/."""
    datasets_dir = clip_benchmark_datasets_dir()
    check_names_and_templates(datasets_dir)
    files = {name: [str(i) for i in indices] for name, indices in subset_indices(datasets_dir).items()}
    if objectnet_metadata is not None:
        files.update(objectnet_files(objectnet_metadata))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            files.update(objectnet_files(fetch_objectnet_metadata(Path(tmp))))
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectnet-metadata", type=Path, default=None, help="local copy of wise-ft's mapping files")
    parser.add_argument("--check", action="store_true", help="compare with specs/ instead of writing")
    args = parser.parse_args(argv)
    try:
        files = derived_files(args.objectnet_metadata)
    except DerivationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    texts = {name: "\n".join(lines) + "\n" for name, lines in files.items()}
    return write_or_check(texts, check=args.check, script="scripts/derive_imagenet_family.py")


def write_or_check(texts: dict[str, str], *, check: bool, script: str) -> int:
    """Write each derived file's text under specs/ (by name), or with ``check`` report those that differ;
    the exit status: 1 when some are out of date. A spec's open_clip figures (:data:`REPORTED_BLOCK_START` on)
    are kept as they are."""
    stale = []
    for name, text in texts.items():
        path = SPECS / name
        kept = path.read_text(encoding="utf-8").split("\n" + REPORTED_BLOCK_START, 1) if path.is_file() else []
        if len(kept) == 2:
            text = text.rstrip("\n") + "\n\n" + REPORTED_BLOCK_START + kept[1]
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)} ({len(text.splitlines())} lines)")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {script}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
