"""benchmarks/device_check.sh --dry-run end to end: the GPU check's every step on the CPU, before device time
is spent on it. One run (a few minutes on a shared 2-core machine); the tests read the JSON it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
ITEMS = ("stack", "data", "mill_eval", "reference", "limits", "precision", "nccl", "mcq")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("out")
    work = tmp_path_factory.mktemp("work")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "MILL_CACHE_DIR": str(work / "cache")}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--work_dir", str(work / "check")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return done, out


@pytest.fixture(scope="module")
def report(dry_run: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    loaded: dict[str, Any] = json.loads((out / "device_check.json").read_text())
    return loaded


def test_every_item_ran_and_the_log_was_written(report: dict[str, Any], dry_run: tuple[Any, Path]) -> None:
    assert report["dry_run"] is True
    assert report["state"] == "done"
    assert {name: report[name]["status"] for name in ITEMS} == dict.fromkeys(ITEMS, "ok")
    assert report["summary"]["items_failed"] == []
    log = (dry_run[1] / "device_check.log").read_text()
    assert "summary:" in log and "mill_eval" in log


def test_stack_records_the_software(report: dict[str, Any]) -> None:
    stack = report["stack"]
    assert stack["missing"] == []
    assert stack["versions"]["torch"] and stack["versions"]["polars"] and stack["versions"]["mill-core"]
    assert stack["cpu_count"] >= 1


def test_data_is_webp_replicated_under_distinct_keys(report: dict[str, Any]) -> None:
    data = report["data"]
    assert data["n_samples"] == 320
    assert 0 < data["distinct_images"] < data["n_samples"]
    assert data["mean_webp_kib"] > 0
    assert 0 < data["reference_samples"] < data["n_samples"]


def test_throughput_figures_are_positive(report: dict[str, Any]) -> None:
    evaluation, limits, reference = report["mill_eval"], report["limits"], report["reference"]
    assert evaluation["n_samples"] == 320
    assert evaluation["wall_s"] > 0 and evaluation["images_per_s"] > 0
    assert reference["n_samples"] == report["data"]["reference_samples"]
    assert reference["images_per_s"] > 0 and reference["batch_size"] == 64 and reference["num_workers"] == 4
    assert all(rate > 0 for rate in limits["rates"].values())
    assert limits["classifier_s"] > 0 and limits["n_prompts"] == 20
    assert limits["lower_limit"] in ("forward_host", "decode")
    assert limits["end_to_end_fraction_of_lower"] > 0
    assert limits["largest_share"] in ("fixed_start_up", "classifier", "images")
    assert report["summary"]["vs_clip_benchmark"] > 0


def test_precision_agreement_is_counted(report: dict[str, Any]) -> None:
    precision = report["precision"]
    assert precision["n_samples"] == 300
    assert 0 <= precision["top1_agree"] <= 300
    # The bundled demo model is trained: both precisions are far above chance (1/12).
    assert precision["fp32"]["accuracy"] > 0.5 and precision["amp_bf16"]["accuracy"] > 0.5
    assert report["summary"]["bf16_fp32_agree"] == f"{precision['top1_agree']}/300"


def test_process_group_and_mcq(report: dict[str, Any]) -> None:
    assert report["nccl"]["backend"] == "gloo" and report["nccl"]["world_size"] == 1
    mcq = report["mcq"]
    assert mcq["batched"]["batch_size"] > 1 and mcq["single"]["batch_size"] == 1
    assert mcq["batched"]["samples_per_s"] > 0 and mcq["single"]["samples_per_s"] > 0
    # Greedy decoding of the same inputs: batching must not change the answers.
    assert mcq["identical_answers"] == mcq["compared"] > 0
