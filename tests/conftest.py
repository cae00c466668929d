"""Shared fixtures of the end-to-end tests: a tiny CLIP model, a tiny VLM and synthetic ImageNet-layout
shards, written once per session, and the ``mill`` command as a real process (in-process it is the
``mill_in_process`` fixture of the ``mill_testing`` plugin, tests/support/mill-testing).

The runs several tests inspect (the zero-shot pair and the MCQ baseline) are session fixtures too, so
the suite pays for each model load and for the 1000-class classifier once. (The resume and bad-input
tests keep theirs in ``resilience/conftest.py``.)
"""

from __future__ import annotations

import os

# Tests never reach a model hub: set before huggingface_hub reads it at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from attrs import frozen

from mill.backends.clip.tiny import TinyModel, write_tiny_model
from mill.backends.llm.tiny import write_tiny_vlm
from mill.core.results import read_aggregate
from mill.data import write_synthetic_shards
from mill.testing.cli import Mill, Outcome, run_in_process

# ImageNet labels (< 1000) over enough classes that a random-weight model's predictions vary.
N_CLASSES = 30
PER_CLASS = 2
N_SAMPLES = N_CLASSES * PER_CLASS
MCQ_LIMIT = 12


@frozen
class Shape:
    """The size of the synthetic data set and of the MCQ subset, for tests that check counts."""

    n_classes: int = N_CLASSES
    n_samples: int = N_SAMPLES
    mcq_limit: int = MCQ_LIMIT


@frozen
class Run:
    """A finished ``mill eval`` into its own output directory, and readers for what it wrote."""

    outcome: Outcome
    output_dir: Path

    def aggregate(self) -> pl.DataFrame:
        return read_aggregate(self.output_dir)

    def per_sample_path(self) -> Path:
        files = self.aggregate().get_column("output_file").unique().to_list()
        assert len(files) == 1, files
        return self.output_dir / files[0]

    def per_sample(self) -> pl.DataFrame:
        return pl.read_parquet(self.per_sample_path())

    def manifest(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.per_sample_path().with_suffix(".json").read_text())
        return loaded


Eval = Callable[..., Run]


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def script() -> Callable[[str], ModuleType]:
    """``script(name)``: the module of ``scripts/{name}.py``, loaded from its file (scripts/ is no package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # attrs and dataclasses look their module up
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def shape() -> Shape:
    return Shape()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache every run shares. Empty at first: the zero-shot fixture's first run builds the classifier."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def mill_process(cache_dir: Path) -> Mill:
    """``mill ARGV`` as a real process (``python -m mill.cli``), offline, with a wide terminal for rich."""

    def run(*argv: str) -> Outcome:
        env = {**os.environ, "MILL_CACHE_DIR": str(cache_dir), "COLUMNS": "400"}
        env.pop("MILL_OUTPUT_DIR", None)
        done = subprocess.run(
            [sys.executable, "-m", "mill.cli", *argv], capture_output=True, text=True, env=env, check=False
        )
        return Outcome(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 samples of 30 classes in three wds_imagenet1k-layout shards (fewer than ImageNet's 50,000)."""
    root = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(root, n_classes=N_CLASSES, per_class=PER_CLASS, n_shards=3)
    return root


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A tiny random-weight open_clip model's files (for references that load it themselves)."""
    return write_tiny_model(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def clip_model(tiny_clip: TinyModel) -> str:
    """The model spec of :func:`tiny_clip` for ``mill eval``, in float32."""
    return f"clip[path={tiny_clip.config_path},pretrained={tiny_clip.checkpoint_path},dtype=float32]"


@pytest.fixture(scope="session")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-vlm")


@pytest.fixture(scope="session")
def vlm_model(vlm_dir: Path) -> str:
    """The model spec of a tiny random-weight Qwen2-VL: a model folder, so the hf backend serves it."""
    return f"{vlm_dir}[dtype=float32]"


@pytest.fixture(scope="session")
def mill_eval(tmp_path_factory: pytest.TempPathFactory, shards: Path, cache_dir: Path) -> Eval:
    """``mill_eval(model, benchmark, *flags)``: ``mill eval`` in-process on the synthetic shards, into a
    fresh output directory (so no run resumes another). Pass ``process=mill_process`` for a real process."""

    def run(model: str, benchmark: str, *flags: str, process: Mill | None = None) -> Run:
        output_dir = tmp_path_factory.mktemp("results")
        argv = ["eval", model, benchmark, "--data_dir", str(shards), "--output_dir", str(output_dir), *flags]
        in_process = (*argv, "--cache_dir", str(cache_dir), "--quiet")
        return Run(run_in_process(*in_process) if process is None else process(*argv), output_dir)

    return run


@frozen
class ZeroShotRuns:
    """The same zero-shot command run twice against one cache: first as a process, then in-process."""

    first: Run
    second: Run


@pytest.fixture(scope="session")
def zero_shot(mill_eval: Eval, mill_process: Mill, clip_model: str) -> ZeroShotRuns:
    """Request this before any other CLIP run: its first run must find the classifier cache empty."""
    first = mill_eval(clip_model, "imagenet", "--allow_incomplete", process=mill_process)
    assert first.outcome.code == 0, first.outcome.err
    second = mill_eval(clip_model, "imagenet", "--allow_incomplete")
    assert second.outcome.code == 0, second.outcome.err
    return ZeroShotRuns(first, second)


#: The MCQ baseline's flags. Four samples a batch: the runs comparing batch sizes reuse this one.
MCQ_FLAGS = ("--limit", str(MCQ_LIMIT), "--batch_size", "4")


@pytest.fixture(scope="session")
def mcq_flags() -> tuple[str, ...]:
    return MCQ_FLAGS


@pytest.fixture(scope="session")
def mcq_run(mill_eval: Eval, mill_process: Mill, vlm_model: str) -> Run:
    """The VLM on ``imagenet`` (not naming the variant), as a real process, on a 12-sample subset."""
    run = mill_eval(vlm_model, "imagenet", *MCQ_FLAGS, process=mill_process)
    assert run.outcome.code == 0, run.outcome.err
    return run
