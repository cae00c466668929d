"""The foundation across distributions: ``mill ls`` with every backend installed, what installing the
CLIP backend pulls in, and how ``mill eval`` plans runs (comma lists, capability matching,
argument precedence) before anything is loaded or written."""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mill.backends.clip.plugin import ClipPlugin
from mill.cli.main import EXIT_USER_ERROR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def _table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables printed in ``text``, each as its stripped cells."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def test_ls_lists_variants_and_installed_backends(mill_process: Any) -> None:
    outcome = mill_process("ls")
    assert outcome.code == 0, outcome.err
    rows = _table_rows(outcome.out)
    benchmarks = [row[:4] for row in rows if len(row) == 6]
    assert ["imagenet", "imagenet", "zero_shot", "acc"] in benchmarks
    assert ["imagenet", "imagenet_mcq", "generative_mcq", "imagenet_mcq_acc"] in benchmarks
    backends = {row[0]: row[1] for row in rows if len(row) == 2}
    assert backends["clip"] == "mill-backends-clip"
    assert backends["hf"] == "mill-backends-llm"
    assert backends["vllm"] == "mill-backends-llm"


# --- What installing the CLIP backend pulls in ----------------------------------------------------


def _local_requirements(package: str) -> list[Requirement]:
    data = tomllib.loads((REPO / "packages" / package / "pyproject.toml").read_text())
    return [Requirement(text) for text in data["project"]["dependencies"]]


def _dependency_closure(packages: list[str]) -> set[str]:
    """Every distribution ``pip install ./packages/P ...`` would install, walked from the checkout's
    pyproject files (Mill's own distributions) and the installed metadata of everything else.
    Requirements behind extras or markers that do not apply here are not followed."""
    seen: set[str] = set()
    todo = [requirement for package in packages for requirement in _local_requirements(package)]
    seen.update(canonicalize_name(package) for package in packages)
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        if name.startswith("mill-"):
            todo.extend(_local_requirements(name))
            continue
        try:
            todo.extend(Requirement(text) for text in requires(name) or [])
        except PackageNotFoundError:
            pytest.fail(f"{name} (required through {', '.join(packages)}) is not installed in the test environment")
    return seen


def test_clip_backend_and_cli_pull_in_neither_transformers_nor_vllm() -> None:
    # pip's own resolution (`pip install --dry-run --report`) answers the same question but spends a
    # minute fetching ~120 index pages; the requirement graph it walks is this one.
    closure = _dependency_closure(["mill-cli", "mill-backends-clip"])
    assert {"mill-core", "mill-data", "open-clip-torch", "torch", "torchvision"} <= closure
    assert "transformers" not in closure
    assert "vllm" not in closure


def test_llm_backend_does_pull_in_transformers() -> None:
    # The walk above can find transformers when it is required: otherwise its absence would prove nothing.
    assert "transformers" in _dependency_closure(["mill-backends-llm"])


# --- Planning -------------------------------------------------------------------------------------


def test_unknown_backend_lists_installed_ones(mill_eval: Any) -> None:
    outcome = mill_eval("clpi[path=ViT-B-32]", "imagenet").outcome
    assert outcome.code == EXIT_USER_ERROR
    assert "Did you mean clip" in outcome.err
    installed = re.search(r"Installed backends: ([^.]*)\.", outcome.err)
    assert installed is not None, outcome.err
    assert {"clip", "hf", "vllm"} <= set(installed.group(1).split(", "))


def test_invalid_pair_in_a_comma_list_fails_before_anything_is_written(
    mill_eval: Any, vlm_model: str, clip_model: str
) -> None:
    # The VLM × imagenet_mcq pair is valid and comes first; the CLIP pair is not. Nothing may run.
    run = mill_eval(f"{vlm_model},{clip_model}", "imagenet_mcq", "--limit", "2")
    assert run.outcome.code == EXIT_USER_ERROR
    assert "zero_shot" in run.outcome.err
    assert not (run.output_dir / "aggregate.csv").exists()
    assert not (run.output_dir / "outputs").exists()


def test_model_serving_no_variant_is_rejected_before_loading(
    mill_eval: Any, clip_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_load(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded for a pair that cannot run")

    monkeypatch.setattr(ClipPlugin, "load", no_load)
    # A data directory that does not exist: opening the data first would fail differently.
    run = mill_eval(clip_model, "imagenet_mcq", "--data_dir", str(tmp_path / "missing"))
    assert run.outcome.code == EXIT_USER_ERROR
    err = run.outcome.err
    assert "serves retrieval, zero_shot" in err
    assert "imagenet_mcq needs generative_mcq" in err
    assert "it can be evaluated on imagenet instead" in err
    assert "vision-language model (hf, vllm, or openai for a served one)" in err
    assert not (run.output_dir / "aggregate.csv").exists()


def test_model_spec_batch_size_beats_the_global_flag(mill_eval: Any, clip_model: str, zero_shot: Any) -> None:
    # zero_shot is requested so that this run finds the classifier already cached. (That the global
    # flag applies when the spec is silent is checked by the MCQ baseline.)
    run = mill_eval(clip_model.replace("]", ",batch_size=5]"), "imagenet", "--batch_size", "3", "--limit", "6")
    assert run.outcome.code == 0, run.outcome.err
    assert run.manifest()["resolved_args"]["batch_size"] == 5
