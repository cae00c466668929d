"""Derive the specs of DataComp's classification datasets whose class names and templates clip_benchmark ships
(re-runnable).

DataComp (mlfoundations/datacomp at :data:`DATACOMP_COMMIT`) evaluates each dataset of its ``tasklist.yml`` on
its own webdataset export, ``djghosh/wds_{task}_test`` on the Hugging Face Hub (``/`` in the task written
``-``), through clip_benchmark's ``wds/`` loader (``eval_utils/wds_eval.py``), and scores it by its
``main_metric`` (top-1 unless the task list names another; ``aggregate_scores.py`` averages the 38 that have
one). :data:`TASKS` transcribes, for the datasets derived here, each task's key, size, class count and main
metric from that ``tasklist.yml``.

Class names and templates are the installed clip_benchmark package's (``en_classnames.json`` and
``en_zeroshot_classification_templates.json`` under the task's short name), pinned to
:data:`CLIP_BENCHMARK_VERSION` and the two files' SHA-256; each spec holds them inline, with the source named
in a comment. Only datasets for which the package ships both are derived: the others (CIFAR-10/100, DTD,
FGVC Aircraft, Food-101, Cars, RESISC45, STL-10, SUN397, VOC2007, Rendered SST2) take their names from the
export's own ``classnames.txt`` and need a spec key that reads them at run time (a later step).

    python scripts/derive_datacomp_specs.py           # write specs/<name>.toml
    python scripts/derive_datacomp_specs.py --check   # exit 1 if a spec in specs/ differs

Needs clip-benchmark (pip install clip-benchmark==1.6.2).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# The ImageNet-family script's helpers: this folder is on the path when run as a script, not when a test loads it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive_imagenet_family import DerivationError, clip_benchmark_datasets_dir, write_or_check

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"

DATACOMP_COMMIT = "4a8df1992566ef8334773f7152e1855b1f716162"
CLIP_BENCHMARK_VERSION = "1.6.2"
CLIP_BENCHMARK_FILES = {
    "en_classnames.json": "73d279021a4bc88059884d01fae66c35ec33793ede8bc9ae54c46632625c4993",
    "en_zeroshot_classification_templates.json": "b78cc883ce1d6aefd304f180046ee25e778d627e099222fbcc57f01657c53c31",
}
#: (DataComp task key, its display name, Mill benchmark name, test-set size, classes, DataComp's main metric).
TASKS = (
    ("vtab/caltech101", "Caltech-101", "caltech101", 6085, 102, "mean_per_class_recall"),
    ("vtab/clevr_count_all", "CLEVR Counts", "clevr_count_all", 15000, 8, "acc1"),
    ("vtab/clevr_closest_object_distance", "CLEVR Distance", "clevr_closest_object_distance", 15000, 6, "acc1"),
    ("country211", "Country211", "country211", 21100, 211, "acc1"),
    ("vtab/eurosat", "EuroSAT", "eurosat", 5400, 10, "acc1"),
    ("gtsrb", "GTSRB", "gtsrb", 12630, 43, "acc1"),
    ("vtab/kitti_closest_vehicle_distance", "KITTI Vehicle Distance", "kitti_closest_vehicle_distance", 711, 4, "acc1"),
    ("mnist", "MNIST", "mnist", 10000, 10, "acc1"),
    ("vtab/flowers", "Oxford Flowers-102", "flowers", 6149, 102, "mean_per_class_recall"),
    ("vtab/pets", "Oxford-IIIT Pet", "pets", 3669, 37, "mean_per_class_recall"),
    ("vtab/pcam", "PatchCamelyon", "pcam", 32768, 2, "acc1"),
    ("vtab/svhn", "SVHN", "svhn", 26032, 10, "acc1"),
)
#: DataComp's metric names as Mill's zero_shot kind names them.
METRICS = {"acc1": "acc", "mean_per_class_recall": "mean_per_class_recall"}


def pinned_sources(datasets_dir: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """clip_benchmark's class names and templates, by dataset, after checking its version and the files' hashes."""
    installed = importlib.metadata.version("clip-benchmark")
    if installed != CLIP_BENCHMARK_VERSION:
        raise DerivationError(f"clip-benchmark {installed} is installed; the specs pin {CLIP_BENCHMARK_VERSION}")
    loaded = []
    for name, digest in CLIP_BENCHMARK_FILES.items():
        data = (datasets_dir / name).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DerivationError(f"{datasets_dir / name}: SHA-256 {actual}, expected {digest}")
        loaded.append(json.loads(data))
    return loaded[0], loaded[1]


def _toml_strings(values: Sequence[str]) -> str:
    # A JSON string is a TOML basic string (the same escapes); one per line keeps the diff of a rename small.
    return "[\n" + "".join(f"  {json.dumps(value, ensure_ascii=False)},\n" for value in values) + "]"


def spec_text(task: tuple[str, str, str, int, int, str], names: list[str], templates: list[str]) -> str:
    """The TOML of one derived spec."""
    key, title, name, size, n_classes, metric = task
    if len(names) != n_classes:
        raise DerivationError(f"{key}: clip_benchmark lists {len(names)} classes, DataComp's task list {n_classes}")
    for template in templates:
        if "{c}" not in template:
            raise DerivationError(f"{key}: template {template!r} lacks the {{c}} placeholder")
    mill_metric = METRICS[metric]
    duplicates = len(set(names)) != len(names)
    export = key.replace("/", "-")
    return f"""# Written by scripts/derive_datacomp_specs.py; edit that script, not this file.
# {title} as DataComp evaluates it (mlfoundations/datacomp@{DATACOMP_COMMIT[:12]}, tasklist.yml: {key}):
# its webdataset export through clip_benchmark's wds loader, scored by its main metric ({metric}).

name = "{name}"
description = "{title} test set ({size:,} images, {n_classes} classes), as DataComp evaluates it"
seed = 42
headline_metric = "{mill_metric}"

[dataset]
source = "hf://datasets/djghosh/wds_{export}_test"
split = "test"
image_member = "webp"
label_member = "cls"
n_samples = {size}

[classes]
# clip_benchmark {CLIP_BENCHMARK_VERSION}'s en_classnames.json["{key.split("/")[-1]}"], in label order.
count = {n_classes}
{"allow_duplicates = true" + chr(10) if duplicates else ""}names = {_toml_strings(names)}

[templates]
# clip_benchmark {CLIP_BENCHMARK_VERSION}'s en_zeroshot_classification_templates.json["{key.split("/")[-1]}"].
list = {_toml_strings(templates)}

[variants.{name}]
kind = "zero_shot"
metric = "{mill_metric}"
top_k = 5
"""


def derived_specs() -> dict[str, str]:
    """Every derived spec's text, by file name under specs/."""
    classnames, templates = pinned_sources(clip_benchmark_datasets_dir())
    specs = {}
    for task in TASKS:
        short = task[0].split("/")[-1]
        if short not in classnames or short not in templates:
            raise DerivationError(f"clip_benchmark ships no class names or templates for {short}")
        specs[f"{task[2]}.toml"] = spec_text(task, classnames[short], templates[short])
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with specs/ instead of writing")
    args = parser.parse_args(argv)
    try:
        specs = derived_specs()
    except DerivationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return write_or_check(specs, check=args.check, script="scripts/derive_datacomp_specs.py")


if __name__ == "__main__":
    sys.exit(main())
