"""Write open_clip's published figures into the specs of DataComp's datasets as ``[[reported]]`` (re-runnable).

open_clip's results table, ``docs/openclip_results.csv`` of mlfoundations/open_clip at :data:`OPEN_CLIP_COMMIT`
(the last commit to change it; SHA-256 pinned), has one row per pretrained model and one column per DataComp
dataset, holding DataComp's main metric for it. For each of :data:`MODELS` (those the ImageNet-family specs carry)
and each DataComp member spec in ``specs/`` (``scripts/derive_datacomp_suites.py``'s MEMBERS), this writes a block
of ``[[reported]]`` entries at the end of the spec, from the line :data:`BLOCK_START` on: the spec's variant
named like it, its headline metric, the figure as the CSV spells it, and the CSV's URL at the commit.
``scripts/derive_datacomp_specs.py`` keeps the block when it rewrites a spec. The ImageNet-family specs hold their
figures by hand (beside timm's and torchvision's); this checks them against the CSV instead of writing them (the
DataComp suite's members are the ``_datacomp`` specs of DataComp's own copies, which get a block).
A member whose spec is not in ``specs/`` yet is listed and skipped: run this again once it exists.

    python scripts/derive_openclip_reported.py --csv FILE   # write the blocks (FILE: the CSV at the commit)
    python scripts/derive_openclip_reported.py              # fetch the CSV at the commit from GitHub
    python scripts/derive_openclip_reported.py --check --csv FILE   # exit 1 if a spec differs
    python scripts/derive_openclip_reported.py --markdown --csv FILE   # docs/reproducibility/datacomp.md's tables

Without ``--csv`` this needs network access to raw.githubusercontent.com.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import tomllib

# The other derivation scripts: this folder is on the path when run as a script, not when a test loads it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive_datacomp_suites import MEMBERS, RETRIEVAL, SHIFTS, UNAVAILABLE, VTAB
from derive_imagenet_family import REPORTED_BLOCK_START as BLOCK_START
from derive_imagenet_family import DerivationError

OPEN_CLIP_COMMIT = "29b90b8dde9125c479c0ddbab477310f665a0435"
CSV_PATH = "docs/openclip_results.csv"
CSV_SHA256 = "6b3f9313e2e24691b31ab69b534b2553165be1a975dd149ee9b4a7facb384d21"
CSV_URL = f"https://github.com/mlfoundations/open_clip/blob/{OPEN_CLIP_COMMIT}/{CSV_PATH}"
RAW_URL = f"https://raw.githubusercontent.com/mlfoundations/open_clip/{OPEN_CLIP_COMMIT}/{CSV_PATH}"
#: (open_clip architecture, pretrained tag): Mill names the model ``architecture/tag``.
MODELS = (
    ("ViT-B-32", "laion2b_s34b_b79k"),
    ("ViT-B-32", "openai"),
    ("ViT-B-16", "laion2b_s34b_b88k"),
    ("ViT-L-14", "laion2b_s32b_b82k"),
)
#: The CSV's column of DataComp's 38-dataset average, and the suites of DataComp's groups by group.
AVERAGE_COLUMN = "Average perf. on 38 datasets"
SUITE_GROUPS = {"distribution_shifts": SHIFTS, "vtab": VTAB, "retrieval": RETRIEVAL}
#: The ImageNet-family specs (on the clip_benchmark exports) hold open_clip's figures by hand
#: (docs/reproducibility/imagenet_family.md): checked against the CSV's column, not written.
BY_HAND = {
    "imagenet": "ImageNet 1k",
    "imagenet_v2": "ImageNet v2",
    "imagenet_sketch": "ImageNet Sketch",
    "imagenet_a": "ImageNet-A",
    "imagenet_o": "ImageNet-O",
    "imagenet_r": "ImageNet-R",
    "objectnet": "ObjectNet",
}


def read_table(data: bytes, *, check_hash: bool = True) -> dict[str, dict[str, str]]:
    """Each of :data:`MODELS`' rows of the CSV (``architecture/tag`` → column → cell), after checking its hash."""
    actual = hashlib.sha256(data).hexdigest()
    if check_hash and actual != CSV_SHA256:
        raise DerivationError(f"{CSV_PATH}: SHA-256 {actual}, expected {CSV_SHA256} (open_clip {OPEN_CLIP_COMMIT})")
    rows = {f"{row['name']}/{row['pretrained']}": row for row in csv.DictReader(io.StringIO(data.decode("utf-8")))}
    missing = [f"{name}/{tag}" for name, tag in MODELS if f"{name}/{tag}" not in rows]
    if missing:
        raise DerivationError(f"{CSV_PATH} has no row for {', '.join(missing)}")
    return {f"{name}/{tag}": rows[f"{name}/{tag}"] for name, tag in MODELS}


def figure(table: Mapping[str, Mapping[str, str]], model: str, column: str) -> str:
    """One cell as the CSV spells it, checked to be a fraction."""
    text = table[model].get(column, "").strip()
    try:
        value = float(text)
    except ValueError:
        raise DerivationError(f"{CSV_PATH}: {model}, column {column!r}: {text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise DerivationError(f"{CSV_PATH}: {model}, column {column!r}: {text} is not a fraction")
    return text


def block(spec_text: str, column: str, table: Mapping[str, Mapping[str, str]]) -> str:
    """The ``[[reported]]`` block of one spec (its variant named like it, its headline metric)."""
    spec = tomllib.loads(spec_text)
    lines = [
        BLOCK_START + " (scripts/derive_openclip_reported.py; edit that script, not this block):",
        f'# DataComp\'s main metric, column "{column}" of {CSV_PATH} at open_clip commit {OPEN_CLIP_COMMIT[:12]}.',
    ]
    for name, tag in MODELS:
        lines += [
            "",
            "[[reported]]",
            f'model = "{name}/{tag}"',
            f'variant = "{spec["name"]}"',
            f'metric = "{spec["headline_metric"]}"',
            f"value = {figure(table, f'{name}/{tag}', column)}",
            f'source = "{CSV_URL}"',
        ]
    return "\n".join(lines) + "\n"


def without_block(text: str) -> str:
    """A spec's text up to its reported block (all of it when it has none), ending in one blank line."""
    head = text.split("\n" + BLOCK_START, 1)[0]
    return head.rstrip("\n") + "\n\n"


def check_by_hand(spec_text: str, spec_name: str, column: str, table: Mapping[str, Mapping[str, str]]) -> None:
    """A hand-written spec's figures for :data:`MODELS` are the CSV's."""
    reported = {(r["model"], r.get("metric")): r["value"] for r in tomllib.loads(spec_text).get("reported", [])}
    for name, tag in MODELS:
        model = f"{name}/{tag}"
        if reported.get((model, "acc")) != float(figure(table, model, column)):
            raise DerivationError(f"specs/{spec_name}.toml: {model}'s figure is not {CSV_PATH}'s {column!r}")


def updated_specs(specs_dir: Path, table: Mapping[str, Mapping[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Each member spec's text with its block (by file name), and the members with no spec in ``specs_dir``."""
    texts, absent = {}, []
    for _, column, name, _, _ in MEMBERS:
        path = specs_dir / f"{name}.toml"
        if name in UNAVAILABLE:
            continue
        if not path.is_file():
            absent.append(name)
            continue
        text = path.read_text(encoding="utf-8")
        texts[path.name] = without_block(text) + block(text, column, table)
    for name, column in BY_HAND.items():
        if (specs_dir / f"{name}.toml").is_file():
            check_by_hand((specs_dir / f"{name}.toml").read_text(encoding="utf-8"), name, column, table)
    return texts, absent


def markdown_tables(table: Mapping[str, Mapping[str, str]]) -> str:
    """The figures of docs/reproducibility/datacomp.md: per dataset, then per suite (pure)."""
    models = [f"{name}/{tag}" for name, tag in MODELS]
    cells = " | ".join(f"{model} open_clip | Mill" for model in models)
    lines = [f"| Dataset | Benchmark | {cells} |", "|---|---|" + "---|---|" * len(models)]
    for _, column, name, _, _ in MEMBERS:
        shown = f"— ({name}: not evaluable)" if name in UNAVAILABLE else f"`{name}`"
        values = " | ".join(f"{figure(table, model, column)} | —" for model in models)
        lines.append(f"| {column} | {shown} | {values} |")
    suites = [("datacomp", None), *[(f"datacomp_{key}", group) for key, group in SUITE_GROUPS.items()]]
    lines += ["", f"| Suite | {cells} |", "|---|" + "---|---|" * len(models)]
    for suite, group in suites:
        members = [m for m in MEMBERS if (group is None or m[4] == group) and m[2] not in UNAVAILABLE]
        size = sum(1 for m in MEMBERS if group is None or m[4] == group)
        means = [sum(float(figure(table, model, m[1])) for m in members) / len(members) for model in models]
        note = f" ({len(members)} of {size}, winogavil missing)" if len(members) < size else ""
        lines.append(f"| `{suite}` | " + " | ".join(f"{mean:.4f}{note} | —" for mean in means) + " |")
    published = " | ".join(f"{figure(table, model, AVERAGE_COLUMN)} | —" for model in models)
    lines.append(f"| open_clip's {AVERAGE_COLUMN!r} (WinoGAViL included) | {published} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=None, help=f"{CSV_PATH} at commit {OPEN_CLIP_COMMIT}")
    parser.add_argument("--check", action="store_true", help="compare with specs/ instead of writing")
    parser.add_argument("--markdown", action="store_true", help="print docs/reproducibility/datacomp.md's tables")
    args = parser.parse_args(argv)
    from derive_imagenet_family import SPECS

    try:
        if args.csv is not None:
            data = args.csv.read_bytes()
        else:
            with urllib.request.urlopen(RAW_URL, timeout=60) as response:
                data = response.read()
        table = read_table(data)
        if args.markdown:
            print(markdown_tables(table), end="")
            return 0
        texts, absent = updated_specs(SPECS, table)
    except DerivationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if absent:
        print(f"no spec yet (skipped): {', '.join(absent)}", file=sys.stderr)
    stale = [name for name, text in texts.items() if (SPECS / name).read_text(encoding="utf-8") != text]
    if args.check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run scripts/derive_openclip_reported.py", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        (SPECS / name).write_text(texts[name], encoding="utf-8")
        print(f"wrote specs/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
