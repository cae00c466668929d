"""Write ``results-v0.1.0/``: a small results directory as Mill 0.1.0 (main before issue 20) wrote it.

Run from a checkout of that version, with every distribution and tests/support installed::

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python packages/mill-cli/tests/data/make_results_v0_1_0.py OUT

It evaluates the bundled demo on ``shapes`` (``--limit 24``): the demo CLIP zero-shot, and a tiny random-weight
Qwen2-VL on the generative and the likelihood multiple-choice variants. The generative run is then aged into
what a Mill with the previous parser version wrote (``scorer_version`` 2 in its manifest, digest recomputed, and
in its aggregate rows), so that ``mill rescore`` has a run to grade again.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import polars as pl

from mill.backends.llm.tiny import write_tiny_vlm
from mill.core.checksum import with_manifest_digest
from mill.core.results import AggregateRow, read_aggregate, upsert_aggregate
from mill.testing.cli import run_in_process

LIMIT = "24"


def main(out: Path) -> None:
    # A fixed place, so that the VLM's identity (its folder) reads the same on every machine.
    work = Path(tempfile.gettempdir()) / "mill-results-v0.1.0"
    shutil.rmtree(work, ignore_errors=True)
    vlm = write_tiny_vlm(work / "tiny-vlm")
    common = ["--output_dir", str(out), "--cache_dir", str(work / "cache"), "--limit", LIMIT, "--quiet"]
    for model, benchmark in [
        ("clip[path=mill-shapes,pretrained=mill-shapes]", "shapes"),
        (f"{vlm}[dtype=float32]", "shapes_mcq"),
        (f"{vlm}[dtype=float32]", "shapes_mcq_likelihood"),
    ]:
        outcome = run_in_process("eval", model, benchmark, *common)
        assert outcome.code == 0, outcome.err
    _age_generative_run(out)
    shutil.rmtree(out / ".mill")  # committed chunks: not part of a finished run's results
    (out / "aggregate.csv.lock").unlink()
    shutil.rmtree(work)


def _age_generative_run(out: Path) -> None:
    (manifest_file,) = [p for p in (out / "outputs").glob("*/shapes_mcq_0shot*.json")]
    manifest = json.loads(manifest_file.read_text())
    manifest = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    manifest_file.write_text(json.dumps(with_manifest_digest({**manifest, "scorer_version": 2}), indent=2))
    rows = read_aggregate(out).filter(pl.col("task_type") == "generative_mcq")
    upsert_aggregate(out, [AggregateRow(**{**row, "scorer_version": 2}) for row in rows.iter_rows(named=True)])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
