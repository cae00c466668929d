"""Finding backends through the ``mill.backends`` entry-point group (pytest/pluggy's pattern).

A backend is an ordinary distribution that declares an entry point; Mill never imports a
backend package by name. Names Mill knows about but finds uninstalled get a message naming the
distribution to install from the checkout (they are not published on PyPI).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from attrs import frozen

from mill.core.backend import BackendPlugin
from mill.core.errors import UnknownBackendError
from mill.core.model_spec import ModelSpec

ENTRY_POINT_GROUP = "mill.backends"
#: Functions ``claim(path) -> args | None`` registered under a backend's name: a bare model path or hub id that a
#: claim accepts goes to that backend with the returned arguments instead of :data:`DEFAULT_PATH_BACKEND`. A claim
#: reads configuration files only and returns None for whatever it cannot read (the default route then reports it).
CLAIM_GROUP = "mill.path_claims"

# Distributions of this repository and the backends they provide, for install hints only.
KNOWN_DISTRIBUTIONS: dict[str, str] = {
    "clip": "./packages/mill-backends-clip",
    "open_clip": "./packages/mill-backends-clip",
    "openclip": "./packages/mill-backends-clip",
    "hf": "./packages/mill-backends-llm",
    "huggingface": "./packages/mill-backends-llm",
    "transformers": "./packages/mill-backends-llm",
    "vllm": "'./packages/mill-backends-llm[vllm]'",
    "timm": "./packages/mill-backends-classifiers",
    "torchvision": "./packages/mill-backends-classifiers",
    "hf_classifier": "'./packages/mill-backends-classifiers[transformers]'",
}

# What an HF id ("Qwen/Qwen3-VL-2B-Instruct") or a model directory resolves to.
DEFAULT_PATH_BACKEND = "hf"


def installed_backends() -> dict[str, EntryPoint]:
    """Every backend name registered by an installed distribution."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def install_hint(name: str) -> str:
    return f"pip install {KNOWN_DISTRIBUTIONS[name]}  (from a Mill checkout)"


@frozen
class ResolvedModel:
    """A model spec with its backend name settled and, for path heads, ``path`` filled in."""

    backend: str
    args: dict[str, object]
    spec: ModelSpec


def claim_path(path: str) -> tuple[str, dict[str, object]] | None:
    """The backend (and its arguments) of the first installed claim, by backend name, that accepts ``path``."""
    for entry in sorted(entry_points(group=CLAIM_GROUP), key=lambda e: e.name):
        claim: Callable[[str], Mapping[str, object] | None] = entry.load()
        args = claim(path)
        if args is not None:
            return entry.name, dict(args)
    return None


def resolve_model(spec: ModelSpec, installed: set[str] | None = None) -> ResolvedModel:
    """Decide which backend serves ``spec``.

    A head that is a backend name (installed or known) is that backend. Otherwise a head that
    contains ``/`` or names an existing directory is a model path: for the backend whose claim
    (:data:`CLAIM_GROUP`) accepts it, else for ``hf``.

    Raises:
        UnknownBackendError: with close-match suggestions.
    """
    names = set(installed_backends()) if installed is None else installed
    head = spec.head
    if head in names or head in KNOWN_DISTRIBUTIONS:
        return ResolvedModel(head, dict(spec.args), spec)
    if "/" in head or Path(head).is_dir():
        claimed = claim_path(head)
        backend, path_args = claimed if claimed is not None else (DEFAULT_PATH_BACKEND, {"path": head})
        given = sorted(set(path_args) & set(spec.args))
        if given:
            raise UnknownBackendError(
                f"{spec.text!r}: the model is given twice (as the head and as {', '.join(k + '=' for k in given)})"
            )
        return ResolvedModel(backend, {**path_args, **spec.args}, spec)
    raise _unknown(head, names)


def _unknown(name: str, installed: set[str]) -> UnknownBackendError:
    close = difflib.get_close_matches(name, sorted(installed | set(KNOWN_DISTRIBUTIONS)), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownBackendError(
        f"unknown backend {name!r}.{hint} Installed backends: {', '.join(sorted(installed)) or 'none'}. "
        "A model path or hub id (containing '/') is evaluated with the hf backend."
    )


@frozen
class LoadedPlugin:
    """A backend's entry point, imported: its name, the plugin object, and the distribution providing it
    (from the entry point's metadata: its version enters the run identity)."""

    name: str
    plugin: BackendPlugin
    distribution: str | None


def load_plugin(name: str) -> LoadedPlugin:
    """Import the entry point registered as ``name``.

    Raises:
        UnknownBackendError: naming the distribution to install for a known but missing backend, or
            naming the distribution whose entry point is not a backend plugin.
    """
    installed = installed_backends()
    if name in installed:
        entry = installed[name]
        distribution = entry.dist.name if entry.dist is not None else None
        plugin = entry.load()
        if not isinstance(plugin, BackendPlugin):
            raise UnknownBackendError(
                f"backend {name!r} (entry point {entry.value!r} of {distribution or 'an unknown distribution'}) "
                "is not a Mill backend plugin: it lacks capabilities() or load(); see docs/backends.md"
            )
        return LoadedPlugin(name, plugin, distribution)
    if name in KNOWN_DISTRIBUTIONS:
        have = ", ".join(sorted(installed)) or "none"
        raise UnknownBackendError(
            f"backend {name!r} is not installed. Install it with: {install_hint(name)}. Installed backends: {have}."
        )
    raise _unknown(name, set(installed))
