"""A 2-process gloo launch on CPU gives per-sample results identical to one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl

from mill.core.results import read_aggregate


def test_torchrun_two_ranks_equal_one_process(
    tmp_path: Path, shards: Path, cache_dir: Path, clip_model: str, zero_shot: Any
) -> None:
    output_dir = tmp_path / "results"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    argv = ["-m", "mill.cli", "eval", clip_model, "imagenet", "--data_dir", str(shards)]
    argv += ["--output_dir", str(output_dir), "--allow_incomplete", "--num_workers", "0"]
    env = {**os.environ, "MILL_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1", "MILL_CHUNK_SIZE": "16"}
    done = subprocess.run([*launch, *argv], capture_output=True, text=True, env=env, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # Both ranks committed chunks of their own, and rank 0 alone wrote the results.
    run_dirs = list((output_dir / ".mill" / "runs").iterdir())
    assert len(run_dirs) == 1
    chunk_names = {p.name for p in run_dirs[0].glob("chunk-*.parquet")}
    assert any(name.startswith("chunk-r1-") for name in chunk_names), chunk_names
    assert any(not name.startswith("chunk-r") for name in chunk_names), chunk_names

    single = zero_shot.first.per_sample()
    distributed = pl.read_parquet(
        output_dir / zero_shot.first.per_sample_path().relative_to(zero_shot.first.output_dir)
    )
    assert single.get_column("prediction").n_unique() >= 5  # equality below is not vacuous
    # The same results; which batch computed a sample is each rank's own (a rank's last batch is partial elsewhere).
    assert distributed.drop("batch_size").equals(single.drop("batch_size"))
    assert distributed["batch_size"].null_count() == 0
    columns = ["model", "task", "metric", "performance", "stderr", "n_samples"]
    assert (
        read_aggregate(output_dir)
        .select(columns)
        .sort(columns)
        .equals(zero_shot.first.aggregate().select(columns).sort(columns))
    )

    # Restarted as one process, the job reuses what both ranks committed and computes nothing.
    rerun = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, check=False, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    manifest = json.loads(
        (output_dir / zero_shot.first.per_sample_path().relative_to(zero_shot.first.output_dir))
        .with_suffix(".json")
        .read_text()
    )
    assert manifest["n_reused"] == manifest["n_samples"] == len(single)
