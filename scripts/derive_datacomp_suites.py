"""Write the DataComp suites (``specs/suites/datacomp*.toml``) from DataComp's task list and scoring (re-runnable).

DataComp (mlfoundations/datacomp at :data:`DATACOMP_COMMIT`) averages the 38 datasets of its ``tasklist.yml`` that
get a main metric (``aggregate_scores.py``: ``np.mean`` over them; FairFace and UTKFace report none), and reports
three groups beside ImageNet itself (``DATASET_GROUPS``): ImageNet distribution shifts, VTAB and retrieval.
:data:`MEMBERS` transcribes the 38 (task key, display name, main metric, group) in the task list's order, with the
Mill benchmark each is, as ``scripts/derive_datacomp_specs.py`` names its specs: the task key's last part, and for
the ImageNet family the family spec's name with ``_datacomp`` (the specs of DataComp's own copies, not the
clip_benchmark exports the family specs read); Flickr30k and MSCOCO are the retrieval specs. WinoGAViL needs a
task kind Mill does not have (choosing several candidate images for a cue): each suite lists it as
``unavailable``, so that its mean says "37 of 38" instead of averaging fewer members silently.

    python scripts/derive_datacomp_suites.py                       # write specs/suites/datacomp*.toml
    python scripts/derive_datacomp_suites.py --check               # exit 1 if a suite file differs
    python scripts/derive_datacomp_suites.py --datacomp-checkout DIR   # also check MEMBERS against DataComp's files

The last needs PyYAML and a checkout of DataComp at :data:`DATACOMP_COMMIT`.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# The ImageNet-family script's helpers: this folder is on the path when run as a script, not when a test loads it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive_imagenet_family import DerivationError, write_or_check

DATACOMP_COMMIT = "4a8df1992566ef8334773f7152e1855b1f716162"

SHIFTS, VTAB, RETRIEVAL = "ImageNet dist. shifts", "VTAB", "Retrieval"
#: (tasklist.yml key, display name, Mill benchmark, main_metric, aggregate_scores.py group or "").
MEMBERS = (
    ("vtab/caltech101", "Caltech-101", "caltech101", "mean_per_class_recall", VTAB),
    ("cifar10", "CIFAR-10", "cifar10", "acc1", ""),
    ("vtab/cifar100", "CIFAR-100", "cifar100", "acc1", VTAB),
    ("vtab/clevr_count_all", "CLEVR Counts", "clevr_count_all", "acc1", VTAB),
    ("vtab/clevr_closest_object_distance", "CLEVR Distance", "clevr_closest_object_distance", "acc1", VTAB),
    ("country211", "Country211", "country211", "acc1", ""),
    ("vtab/dtd", "Describable Textures", "dtd", "acc1", VTAB),
    ("vtab/eurosat", "EuroSAT", "eurosat", "acc1", VTAB),
    ("fgvc_aircraft", "FGVC Aircraft", "fgvc_aircraft", "mean_per_class_recall", ""),
    ("food101", "Food-101", "food101", "acc1", ""),
    ("gtsrb", "GTSRB", "gtsrb", "acc1", ""),
    ("imagenet1k", "ImageNet 1k", "imagenet_datacomp", "acc1", ""),
    ("imagenet_sketch", "ImageNet Sketch", "imagenet_sketch_datacomp", "acc1", SHIFTS),
    ("imagenetv2", "ImageNet v2", "imagenet_v2_datacomp", "acc1", SHIFTS),
    ("imagenet-a", "ImageNet-A", "imagenet_a_datacomp", "acc1", SHIFTS),
    ("imagenet-o", "ImageNet-O", "imagenet_o_datacomp", "acc1", SHIFTS),
    ("imagenet-r", "ImageNet-R", "imagenet_r_datacomp", "acc1", SHIFTS),
    ("vtab/kitti_closest_vehicle_distance", "KITTI Vehicle Distance", "kitti_closest_vehicle_distance", "acc1", VTAB),
    ("mnist", "MNIST", "mnist", "acc1", ""),
    ("objectnet", "ObjectNet", "objectnet_datacomp", "acc1", SHIFTS),
    ("vtab/flowers", "Oxford Flowers-102", "flowers", "mean_per_class_recall", VTAB),
    ("vtab/pets", "Oxford-IIIT Pet", "pets", "mean_per_class_recall", VTAB),
    ("voc2007", "Pascal VOC 2007", "voc2007", "acc1", ""),
    ("vtab/pcam", "PatchCamelyon", "pcam", "acc1", VTAB),
    ("renderedsst2", "Rendered SST2", "renderedsst2", "acc1", ""),
    ("vtab/resisc45", "RESISC45", "resisc45", "acc1", VTAB),
    ("cars", "Stanford Cars", "cars", "acc1", ""),
    ("stl10", "STL-10", "stl10", "acc1", ""),
    ("sun397", "SUN397", "sun397", "acc1", VTAB),
    ("vtab/svhn", "SVHN", "svhn", "acc1", VTAB),
    ("retrieval/flickr_1k_test_image_text_retrieval", "Flickr", "flickr30k", "mean_recall@1", RETRIEVAL),
    ("retrieval/mscoco_2014_5k_test_image_text_retrieval", "MSCOCO", "mscoco", "mean_recall@1", RETRIEVAL),
    ("misc/winogavil", "WinoGAViL", "winogavil", "jaccard_score_10-12", RETRIEVAL),
    ("wilds/iwildcam", "iWildCam", "iwildcam", "F1-macro_all", ""),
    ("wilds/camelyon17", "Camelyon17", "camelyon17", "acc1", ""),
    ("wilds/fmow", "FMoW", "fmow", "acc_worst_region", ""),
    ("fairness/dollar_street", "Dollar Street", "dollar_street", "acc_top5_wg", ""),
    ("fairness/geode", "GeoDE", "geode", "acc_wg", ""),
)
#: Members Mill cannot evaluate, with the reason each suite file gives.
UNAVAILABLE = {
    "winogavil": "WinoGAViL asks which of several candidate images fit a cue (a Jaccard score over the chosen "
    "images), a task kind Mill does not have; see docs/datacomp.md",
}
#: Suite file name → (suite name, description, DataComp group or None for all 38).
SUITES = {
    "datacomp.toml": ("datacomp", "DataComp's 38 evaluation datasets, averaged as its aggregate_scores.py does", None),
    "datacomp_distribution_shifts.toml": (
        "datacomp_distribution_shifts",
        "DataComp's 'ImageNet dist. shifts' group: ImageNet Sketch, V2, A, O, R and ObjectNet",
        SHIFTS,
    ),
    "datacomp_vtab.toml": ("datacomp_vtab", "DataComp's 'VTAB' group: the 13 VTAB datasets of its task list", VTAB),
    "datacomp_retrieval.toml": (
        "datacomp_retrieval",
        "DataComp's 'Retrieval' group: Flickr30k, MSCOCO (and WinoGAViL, which Mill cannot evaluate)",
        RETRIEVAL,
    ),
}


def suite_text(file: str) -> str:
    """The TOML of one suite file."""
    name, description, group = SUITES[file]
    members = [m for m in MEMBERS if group is None or m[4] == group]
    evaluable = [m[2] for m in members if m[2] not in UNAVAILABLE]
    unavailable = {m[2]: UNAVAILABLE[m[2]] for m in members if m[2] in UNAVAILABLE}
    what = "the 38 datasets with a main_metric" if group is None else f"DATASET_GROUPS[{group!r}]"
    lines = [
        "# Written by scripts/derive_datacomp_suites.py; edit that script, not this file.",
        f"# DataComp's aggregate_scores.py (mlfoundations/datacomp@{DATACOMP_COMMIT[:12]}), {what}:",
        "# the unweighted mean of each member's headline metric (DataComp's main metric). Suite files: docs/specs.md.",
        f"name = {json.dumps(name)}",
        f"description = {json.dumps(description)}",
        "benchmarks = [",
        *[f"  {json.dumps(member)},  # {title} ({key})" for key, title, member, _, _ in members if member in evaluable],
        "]",
    ]
    if unavailable:
        lines.append("")
        lines.append("[unavailable]")
        lines += [f"{member} = {json.dumps(reason)}" for member, reason in unavailable.items()]
    return "\n".join(lines) + "\n"


def check_against_datacomp(checkout: Path) -> None:
    """MEMBERS are DataComp's task list entries with a main metric, and the groups are ``DATASET_GROUPS``."""
    import yaml

    tasks = yaml.safe_load((checkout / "tasklist.yml").read_text(encoding="utf-8"))
    for key, title, _, metric, _ in MEMBERS:
        # evaluate.py scores a task by its main_metric, acc1 when the list names none.
        task = tasks.get(key)
        if task is None or (task["name"], task.get("main_metric", "acc1")) != (title, metric):
            raise DerivationError(f"{key}: not in DataComp's tasklist.yml as {title!r} scored by {metric}")
    # FairFace and UTKFace report no acc1, so their main metric is null and aggregate_scores.py drops them.
    left = set(tasks) - {key for key, *_ in MEMBERS}
    if left != {"fairness/fairface", "fairness/utkface"}:
        raise DerivationError(f"tasklist.yml's tasks beyond the 38 are {sorted(left)}, not FairFace and UTKFace")
    tree = ast.parse((checkout / "aggregate_scores.py").read_text(encoding="utf-8"))
    groups = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DATASET_GROUPS"
    )
    for group, titles in groups.items():
        if set(titles) != {title for _, title, _, _, g in MEMBERS if g == group}:
            raise DerivationError(f"aggregate_scores.py's group {group!r} is not the members marked so here")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with specs/suites/ instead of writing")
    parser.add_argument("--datacomp-checkout", type=Path, default=None, help="check MEMBERS against this checkout")
    args = parser.parse_args(argv)
    try:
        if args.datacomp_checkout is not None:
            check_against_datacomp(args.datacomp_checkout)
    except DerivationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    texts = {f"suites/{file}": suite_text(file) for file in SUITES}
    return write_or_check(texts, check=args.check, script="scripts/derive_datacomp_suites.py")


if __name__ == "__main__":
    sys.exit(main())
