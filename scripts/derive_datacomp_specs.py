"""Derive the specs of DataComp's classification datasets (re-runnable).

DataComp (mlfoundations/datacomp at :data:`DATACOMP_COMMIT`) evaluates each dataset of its ``tasklist.yml`` on
its own webdataset export, ``djghosh/wds_{task}_test`` on the Hugging Face Hub (``/`` in the task written
``-``; the fairness sets without their ``fairness/`` prefix), through clip_benchmark's ``wds/`` loader
(``eval_utils/wds_eval.py``), and scores it by its ``main_metric`` (top-1 unless the task list names another;
``aggregate_scores.py`` averages the 38 that have one). The task tuples below transcribe, for the datasets
derived here, each task's key, size, class count and main metric from that ``tasklist.yml``.

Class names and templates are the installed clip_benchmark package's (``en_classnames.json`` and
``en_zeroshot_classification_templates.json`` under the task's short name), pinned to
:data:`CLIP_BENCHMARK_VERSION` and the two files' SHA-256; each spec holds them inline, with the source named
in a comment. Where the package ships no class names (:data:`EXPORT_NAMED`: it takes torchvision's at export
time) the spec reads the export's own ``classnames.txt`` when the data is opened (``classes.export_file``), as
clip_benchmark's loader does; where it ships no templates either (:data:`WITH_METADATA`, the WILDS and
geographic sets) the export's ``zeroshot_classification_templates.txt`` too. Those five also read each sample's
metadata row (the ``npy`` member DataComp's ``eval_utils/wilds_eval.py`` and ``fairness_eval.py`` read), with the
field names of DataComp's evaluators, and group by the field those evaluators group their main metric by.

The ImageNet family (:data:`IMAGENET_FAMILY`) on DataComp's copies gets specs of its own (``*_datacomp``): the
family specs read clip_benchmark's exports and rename two classes, where DataComp classifies among
clip_benchmark's names as published (two pairs alike); their class, subset and template files are the family's,
which ``scripts/derive_imagenet_family.py`` derives from the same package (this script checks the names and
templates again).

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
from derive_imagenet_family import (
    DerivationError,
    check_names_and_templates,
    clip_benchmark_datasets_dir,
    write_or_check,
)

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
#: Datasets whose class names clip_benchmark does not ship (it takes torchvision's when exporting): the spec
#: reads the export's classnames.txt; the package's templates are inline.
EXPORT_NAMED = (
    ("cars", "Stanford Cars", "cars", 8041, 196, "acc1"),
    ("cifar10", "CIFAR-10", "cifar10", 10000, 10, "acc1"),
    ("vtab/cifar100", "CIFAR-100", "cifar100", 10000, 100, "acc1"),
    ("vtab/dtd", "Describable Textures", "dtd", 1880, 47, "acc1"),
    ("fgvc_aircraft", "FGVC Aircraft", "fgvc_aircraft", 3333, 100, "mean_per_class_recall"),
    ("food101", "Food-101", "food101", 25250, 101, "acc1"),
    ("renderedsst2", "Rendered SST2", "renderedsst2", 1821, 2, "acc1"),
    ("vtab/resisc45", "RESISC45", "resisc45", 6300, 45, "acc1"),
    ("stl10", "STL-10", "stl10", 8000, 10, "acc1"),
    ("sun397", "SUN397", "sun397", 108754, 397, "acc1"),
    ("voc2007", "Pascal VOC 2007", "voc2007", 14976, 20, "acc1"),
)
#: The WILDS and geographic sets: (task, display name, Mill name, size, classes, main metric, the metadata
#: fields of DataComp's evaluator for the task, the field its main metric groups by). Their export is named
#: without the ``fairness/`` prefix (``fairness_eval.py`` strips it).
WITH_METADATA = (
    (
        "wilds/iwildcam", "iWildCam", "iwildcam", 42791, 182, "F1-macro_all",
        ("location", "sequence", "year", "month", "day", "hour", "minute", "second", "y"), None,
    ),
    ("wilds/camelyon17", "Camelyon17", "camelyon17", 85054, 2, "acc1", ("hospital", "slide", "y"), "slide"),
    ("wilds/fmow", "FMoW", "fmow", 22108, 62, "acc_worst_region", ("region", "year", "y"), "region"),
    (
        "fairness/dollar_street", "Dollar Street", "dollar_street", 3503, 58, "acc_top5_wg",
        ("income_ds", "income_meta", "region"), "income_ds",
    ),
    ("fairness/geode", "GeoDE", "geode", 12488, 40, "acc_wg", ("region", "country"), "region"),
)  # fmt: skip
#: The ImageNet family on DataComp's copies: (task, display name, Mill name, size, classes, the family spec whose
#: class files it shares).
IMAGENET_FAMILY = (
    ("imagenet1k", "ImageNet 1k", "imagenet_datacomp", 50000, 1000, "imagenet"),
    ("imagenet_sketch", "ImageNet Sketch", "imagenet_sketch_datacomp", 50889, 1000, "imagenet_sketch"),
    ("imagenetv2", "ImageNet v2", "imagenet_v2_datacomp", 10000, 1000, "imagenet_v2"),
    ("imagenet-a", "ImageNet-A", "imagenet_a_datacomp", 7500, 200, "imagenet_a"),
    ("imagenet-o", "ImageNet-O", "imagenet_o_datacomp", 2000, 200, "imagenet_o"),
    ("imagenet-r", "ImageNet-R", "imagenet_r_datacomp", 30000, 200, "imagenet_r"),
    ("objectnet", "ObjectNet", "objectnet_datacomp", 18574, 113, "objectnet"),
)
#: DataComp's metric names as Mill's zero_shot kind names them.
METRICS = {
    "acc1": "acc",
    "mean_per_class_recall": "mean_per_class_recall",
    "F1-macro_all": "macro_f1",
    "acc_worst_region": "worst_group_acc",
    "acc_wg": "worst_group_acc",
    "acc_top5_wg": "worst_group_acc5",
}
#: The files of an export that clip_benchmark's wds loader reads its class names and templates from.
EXPORT_CLASSNAMES = "classnames.txt"
EXPORT_TEMPLATES = "zeroshot_classification_templates.txt"


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


def _header(key: str, title: str, name: str, metric: str, description: str, headline: str, export: str) -> str:
    return f"""# Written by scripts/derive_datacomp_specs.py; edit that script, not this file.
# {title} as DataComp evaluates it (mlfoundations/datacomp@{DATACOMP_COMMIT[:12]}, tasklist.yml: {key}):
# its webdataset export through clip_benchmark's wds loader, scored by its main metric ({metric}).

name = "{name}"
description = "{description}"
seed = 42
headline_metric = "{headline}"

[dataset]
source = "hf://datasets/djghosh/wds_{export}_test"
split = "test"
image_member = "webp"
label_member = "cls"
"""


def _variant(name: str, metric: str) -> str:
    return f"""
[variants.{name}]
kind = "zero_shot"
metric = "{metric}"
top_k = 5
"""


def _export_name(key: str) -> str:
    return key.removeprefix("fairness/").replace("/", "-")


def spec_text(task: tuple[str, str, str, int, int, str], names: list[str] | None, templates: list[str] | None) -> str:
    """The TOML of one derived spec: class names inline, or (``names`` None) the export's ``classnames.txt``;
    templates inline, or (``templates`` None) the export's templates file."""
    key, title, name, size, n_classes, metric = task
    if names is not None and len(names) != n_classes:
        raise DerivationError(f"{key}: clip_benchmark lists {len(names)} classes, DataComp's task list {n_classes}")
    for template in templates or ():
        if "{c}" not in template:
            raise DerivationError(f"{key}: template {template!r} lacks the {{c}} placeholder")
    mill_metric = METRICS[metric]
    short = key.split("/")[-1]
    description = f"{title} test set ({size:,} images, {n_classes} classes), as DataComp evaluates it"
    text = _header(key, title, name, metric, description, mill_metric, _export_name(key))
    text += f"n_samples = {size}\n\n[classes]\n"
    if names is None:
        text += (
            f"# clip_benchmark {CLIP_BENCHMARK_VERSION} ships no names for {short}: the export's own, read as "
            "clip_benchmark's\n"
            "# wds loader reads them when the data is opened; their hash joins the run's identity.\n"
            f'count = {n_classes}\nexport_file = "{EXPORT_CLASSNAMES}"\n'
        )
    else:
        duplicates = len(set(names)) != len(names)
        text += (
            f'# clip_benchmark {CLIP_BENCHMARK_VERSION}\'s en_classnames.json["{short}"], in label order.\n'
            f"count = {n_classes}\n{'allow_duplicates = true' + chr(10) if duplicates else ''}"
            f"names = {_toml_strings(names)}\n"
        )
    text += "\n[templates]\n"
    if templates is None:
        text += (
            f"# clip_benchmark {CLIP_BENCHMARK_VERSION} ships none for {short}: the export's own, read when the data "
            "is opened.\n"
            f'export_file = "{EXPORT_TEMPLATES}"\n'
        )
    else:
        text += (
            f'# clip_benchmark {CLIP_BENCHMARK_VERSION}\'s en_zeroshot_classification_templates.json["{short}"].\n'
            f"list = {_toml_strings(templates)}\n"
        )
    return text + _variant(name, mill_metric)


def metadata_spec_text(task: tuple[str, str, str, int, int, str, tuple[str, ...], str | None]) -> str:
    """The TOML of a WILDS or geographic set: names and templates from the export, samples with metadata."""
    *first, fields, group = task
    text = spec_text((first[0], first[1], first[2], first[3], first[4], first[5]), None, None)
    grouping = (
        f"# The field DataComp's evaluator groups its main metric by (wilds_eval.py / fairness_eval.py).\n"
        f'group_by = "{group}"\n'
        if group
        else ""
    )
    metadata = (
        "# Each sample's metadata row (its npy member), named as DataComp's evaluator names the fields.\n"
        f'metadata_member = "npy"\nmetadata_fields = [{", ".join(json.dumps(f) for f in fields)}]\n{grouping}'
    )
    return text.replace("\n\n[classes]\n", f"\n{metadata}\n[classes]\n", 1)


def imagenet_spec_text(task: tuple[str, str, str, int, int, str]) -> str:
    """The TOML of an ImageNet-family set on DataComp's copy: the family spec's class and template files."""
    key, title, name, size, n_classes, family = task
    family_text = (SPECS / f"{family}.toml").read_text(encoding="utf-8")
    classes = family_text[family_text.index("[classes]") : family_text.index("[templates]")]
    # Only the zero-shot variant: no projection for classifiers, and none of the family spec's renamings.
    kept = [line for line in classes.splitlines()[1:] if line and not line.startswith(("#", "overrides", "projection"))]
    if 'file = "imagenet_classnames.txt"' in kept:
        kept.append("allow_duplicates = true")
    description = f"{title} ({size:,} images, {n_classes} classes), on DataComp's copy of clip_benchmark's export"
    text = _header(key, title, name, "acc1", description, "acc", _export_name(key))
    text += f"""n_samples = {size}

[classes]
# specs/{family}.toml's class files (clip_benchmark {CLIP_BENCHMARK_VERSION}'s names, checked by this script), without
# that spec's two renamed classes: DataComp classifies among the names as published, two pairs alike.
{chr(10).join(kept)}

[templates]
# The 80 OpenAI ImageNet templates, which clip_benchmark uses for the family (checked by this script).
file = "imagenet_templates.txt"
"""
    return text + _variant(name, "acc")


def derived_specs() -> dict[str, str]:
    """Every derived spec's text, by file name under specs/."""
    datasets_dir = clip_benchmark_datasets_dir()
    classnames, templates = pinned_sources(datasets_dir)
    check_names_and_templates(datasets_dir)
    specs = {}
    for task in TASKS:
        short = task[0].split("/")[-1]
        if short not in classnames or short not in templates:
            raise DerivationError(f"clip_benchmark ships no class names or templates for {short}")
        specs[f"{task[2]}.toml"] = spec_text(task, classnames[short], templates[short])
    for task in EXPORT_NAMED:
        short = task[0].split("/")[-1]
        if short in classnames or short not in templates:
            raise DerivationError(f"{short}: expected clip_benchmark to ship its templates and not its class names")
        specs[f"{task[2]}.toml"] = spec_text(task, None, templates[short])
    for metadata_task in WITH_METADATA:
        short = metadata_task[0].split("/")[-1]
        if short in classnames or short in templates:
            raise DerivationError(f"{short}: clip_benchmark now ships its names or templates; derive them from there")
        specs[f"{metadata_task[2]}.toml"] = metadata_spec_text(metadata_task)
    for family_task in IMAGENET_FAMILY:
        specs[f"{family_task[2]}.toml"] = imagenet_spec_text(family_task)
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
