#!/usr/bin/env bash
# Prepare, on a machine with access to PyPI, everything benchmarks/device_check.sh needs on the GPU machine
# (which has no network): wheels for what its python3 lacks, Mill's own wheels, a numpy that clip_benchmark
# accepts (for that step alone), and a few dozen real photos. All of it goes into .carry/ (git-ignored), which
# the device tool's `run` takes along with `carry: [".carry"]`; the total must stay under the 64 MiB that can
# travel with the working tree, so the versions below are chosen for size within the project's own bounds.
#
#   benchmarks/device_prepare.sh [SAMPLE_DIR]   (default ../shared/data/imagenet-sample beside the repository)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="${MILL_CARRY:-$ROOT/.carry}"
SAMPLE_DIR="${1:-$ROOT/../shared/data/imagenet-sample}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
N_PHOTOS="${N_PHOTOS:-24}"
# The GPU machine's python3 is CPython 3.12 on x86-64 (see .library/device/KINDS.md).
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
# What Mill, open_clip and clip_benchmark import that the machine's image lacks or may hold too old (its own
# timm, pyyaml, regex, safetensors, huggingface_hub, scikit-learn, tqdm, pillow, pyarrow, rich and click serve).
# polars 1.28.1: 33 MiB, where the polars 2.x runtime alone is 54 MB. Of the 1.x releases tried (1.0.0, 1.20.0,
# 1.24.0, 1.27.1, 1.28.1) it is the first on which `is_in(series.implode())`, as mill.core.results uses it, works:
# mill-core's bound polars>=1.0 is too low.
WHEELS=(
    polars==1.28.1
    cattrs==26.2.1
    attrs==26.1.0
    open_clip_torch==3.3.0
    ftfy==6.3.1
    wcwidth==0.2.13
    braceexpand==0.1.7
    webdataset==1.0.2
    clip-benchmark==1.6.2
)
# clip-benchmark's equivalence tests need numpy<2.4 (packages/mill-backends-clip); the machine has 2.5. Installed
# on the GPU machine into its own folder and put on the path for the clip_benchmark step only, if that step
# does not import with the machine's numpy.
STEP_NUMPY=numpy==2.3.5

rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/numpy" "$CARRY/photos"
"$PYTHON" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$CARRY/wheels" "${WHEELS[@]}"
"$PYTHON" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$CARRY/numpy" "$STEP_NUMPY"
for package in mill-core mill-data mill-cli mill-backends-clip mill-backends-llm; do
    "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$CARRY/wheels" "$ROOT/packages/$package" \
        || "$PYTHON" -m pip wheel -q --no-deps -w "$CARRY/wheels" "$ROOT/packages/$package"
done

# A few dozen photos spread over the classes, with their labels (the check re-encodes them as WebP there).
if [[ ! -f "$SAMPLE_DIR/labels.tsv" ]]; then
    echo "device_prepare: $SAMPLE_DIR/labels.tsv not found; pass the imagenet-sample folder" >&2
    exit 1
fi
"$PYTHON" - "$SAMPLE_DIR" "$CARRY/photos" "$N_PHOTOS" <<'PY'
import csv, shutil, sys
from pathlib import Path

source, target, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
with (source / "labels.tsv").open(newline="") as file:
    rows = sorted(csv.DictReader(file, delimiter="\t"), key=lambda row: int(row["class_index"]))
step = max(1, len(rows) // n)
chosen = rows[::step][:n]
for row in chosen:
    shutil.copy2(source / row["filename"], target / row["filename"])
with (target / "labels.tsv").open("w", newline="") as file:
    writer = csv.DictWriter(file, fieldnames=["filename", "class_index"], delimiter="\t", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(chosen)
print(f"device_prepare: {len(chosen)} photos copied")
PY

ls -l "$CARRY/wheels" "$CARRY/numpy"
carried=$(du -sb "$CARRY" | cut -f1)
tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "device_prepare: carried $CARRY = $((carried / 1024)) KiB ($(awk "BEGIN{printf \"%.1f\", $carried/1048576}") MiB);" \
    "with the working tree ($((tree / 1024)) KiB) $(awk "BEGIN{printf \"%.1f\", ($carried+$tree)/1048576}") MiB of 64 MiB"
if (( carried + tree > 64 * 1024 * 1024 )); then
    echo "device_prepare: over the 64 MiB that can travel; carry less" >&2
    exit 1
fi
