"""Defaults the environment sets: where results and caches go, the chunk size, and which Mill is installed."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mill.core.errors import ResultsError

#: Samples per committed chunk unless ``MILL_CHUNK_SIZE`` says otherwise.
DEFAULT_CHUNK_SIZE = 1024
CHUNK_SIZE_ENV = "MILL_CHUNK_SIZE"
#: Mill's own distributions, whose versions enter every run's identity (those installed).
MILL_DISTRIBUTIONS = ("mill-core", "mill-data", "mill-cli")


def versions(names: Sequence[str]) -> dict[str, str]:
    """The installed version of each distribution in ``names``; those not installed are left out."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def chunk_size_from_env(env: Mapping[str, str] = os.environ) -> int:
    """``$MILL_CHUNK_SIZE`` samples per committed chunk, else :data:`DEFAULT_CHUNK_SIZE`.

    Raises:
        ResultsError: the variable is set to something other than a positive integer.
    """
    text = env.get(CHUNK_SIZE_ENV, "").strip()
    if not text:
        return DEFAULT_CHUNK_SIZE
    if not text.isdigit() or int(text) == 0:
        raise ResultsError(f"{CHUNK_SIZE_ENV}={text!r}: expected a positive number of samples per chunk")
    return int(text)


def default_output_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("MILL_OUTPUT_DIR", "mill_results"))


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("MILL_CACHE_DIR", str(Path.home() / ".cache" / "mill")))
