"""Test sessions: one per distribution, installing only that distribution (and the Mill
distributions it depends on), plus ``e2e`` for the cross-package tests and ``lint``.

``nox`` runs them all; ``nox -l`` lists them; ``nox -s clip`` runs one.

Torch is pinned per session so that plain pip resolves builds that import cleanly together:
sessions that need torchvision (open_clip) take torch 2.14.1 with torchvision 0.29.1; sessions
that need torch alone take the much smaller CPU build of 2.13.0 where pip can find it (on a
machine without it, pip takes 2.13.0 from PyPI, which also works).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["core", "data", "clip", "llm", "cli", "e2e", "lint"]

TORCH_ONLY = ("torch==2.13.0",)
TORCH_VISION = ("torch==2.14.1", "torchvision==0.29.1")

CORE = "./packages/mill-core"
DATA = "./packages/mill-data"
CLIP = "./packages/mill-backends-clip"
LLM = "./packages/mill-backends-llm"
CLI = "./packages/mill-cli"

PYTEST = ("pytest", "-q", "-p", "no:cacheprovider")


def _pytest(session: nox.Session, *paths: str) -> None:
    # Tests must never reach a model or dataset hub: this machine has no route to one, and a
    # test that downloads would pass or fail on the network rather than on Mill.
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MILL_CACHE_DIR": str(session.create_tmp())}
    session.run(*PYTEST, *paths, *session.posargs, env=env)


@nox.session
def core(session: nox.Session) -> None:
    """mill-core alone: no torch may be needed."""
    session.install(f"{CORE}[test]")
    _pytest(session, "packages/mill-core/tests")
    session.run("python", "-c", "import sys, mill.core.spec, mill.core.results; assert 'torch' not in sys.modules")


@nox.session
def data(session: nox.Session) -> None:
    session.install(*TORCH_ONLY)
    session.install(CORE, f"{DATA}[test]")
    _pytest(session, "packages/mill-data/tests")


@nox.session
def clip(session: nox.Session) -> None:
    session.install(*TORCH_VISION)
    session.install(CORE, DATA, f"{CLIP}[test]")
    _pytest(session, "packages/mill-backends-clip/tests")


@nox.session
def llm(session: nox.Session) -> None:
    session.install(*TORCH_VISION)
    session.install(CORE, DATA, f"{LLM}[test]")
    _pytest(session, "packages/mill-backends-llm/tests")


@nox.session
def cli(session: nox.Session) -> None:
    """mill-cli without any backend: errors for missing backends, collect, ls."""
    session.install(*TORCH_ONLY)
    session.install(CORE, DATA, f"{CLI}[test]")
    _pytest(session, "packages/mill-cli/tests")


@nox.session
def e2e(session: nox.Session) -> None:
    """Every distribution together: the cross-package and end-to-end tests under tests/."""
    session.install(*TORCH_VISION)
    session.install(CORE, DATA, CLI, CLIP, LLM, "pytest")
    _pytest(session, "tests")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) on everything; mypy --strict on core and the CLI."""
    session.install(*TORCH_ONLY)
    session.install(CORE, DATA, CLI, "ruff", "mypy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "packages/mill-core/src/mill/core", "packages/mill-cli/src/mill/cli")
