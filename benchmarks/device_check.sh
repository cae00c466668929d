#!/usr/bin/env bash
# The GPU device check (issue 16): install the carried wheels over the machine's own python3 (its torch, CUDA
# and transformers stay), then run benchmarks/device_check.py, writing device_check.json and device_check.log
# under $OUT. Prepare .carry/ first, where PyPI is reachable: benchmarks/device_prepare.sh.
#
#   benchmarks/device_check.sh            on the GPU machine (through the device tool, carry: [".carry"])
#   benchmarks/device_check.sh --dry-run  on any machine with Mill installed: CPU, synthetic data, no install
#
# PYTHON picks the interpreter (default python3); MILL_CARRY the carried folder (default .carry/ at the root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="${MILL_CARRY:-$ROOT/.carry}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/device_check_out}"
SITE="${MILL_DEVICE_SITE:-/tmp/mill-device-site}"
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
exec > >(tee "$LOG") 2>&1

dry_run=0
for arg in "$@"; do [[ "$arg" == "--dry-run" ]] && dry_run=1; done

if (( ! dry_run )); then
    for folder in wheels numpy photos; do
        if [[ ! -d "$CARRY/$folder" ]] || [[ -z "$(ls -A "$CARRY/$folder")" ]]; then
            echo "device_check: $CARRY/$folder is missing or empty: run benchmarks/device_prepare.sh where PyPI" \
                "is reachable, then carry .carry" >&2
            exit 2
        fi
    done
    start=$(date +%s.%N)
    # --no-deps over the machine's own torch, transformers, pillow...: only what .carry/wheels holds changes.
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$CARRY"/wheels/*.whl
    # The older numpy, for the clip_benchmark step alone (used only if clip_benchmark refuses the machine's).
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE-numpy" "$CARRY"/numpy/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" MILL_STEP_NUMPY="$SITE-numpy"
    echo "device_check: carried wheels installed in $(awk "BEGIN{print $(date +%s.%N) - $start}") s"
    command -v nvidia-smi >/dev/null && nvidia-smi || true
fi

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MILL_CACHE_DIR="${MILL_CACHE_DIR:-/tmp/mill-device-check-cache}"
exec "$PYTHON" "$ROOT/benchmarks/device_check.py" --out "$OUT" --carry "$CARRY" "$@"
