"""Suites: TOML files that name a list of benchmarks, run as one and summarised by an unweighted mean.

A suite file lives in a ``suites/`` folder beside the specs (the built-in ``specs/suites/``, or
``DIR/suites/`` for each directory of ``MILL_SPEC_PATH``)::

    name = "imagenet_robustness"
    description = "..."
    benchmarks = ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "objectnet"]

``mill eval MODEL SUITE`` runs every member (validated up front, like a comma list); ``mill collect`` shows
the members and their mean only where every member has a result with the same settings (the CLI's
``mill.cli.suite_tables``). The mean is a view: it is never written to aggregate.csv.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import frozen

from mill.core.errors import SpecError, UnknownBenchmarkError
from mill.core.registry import SPEC_PATH_ENV, SpecRegistry, builtin_spec_dir
from mill.core.specfile import structure_in_file
from mill.core.tomlfile import read_toml

#: The folder, beside a directory of specs, that holds suite files.
SUITES_FOLDER = "suites"


@frozen
class _SuiteFile:
    name: str
    description: str
    benchmarks: tuple[str, ...]


@frozen
class Suite:
    """A validated suite file: its members are benchmark (or variant) names, in display order."""

    name: str
    description: str
    benchmarks: tuple[str, ...]
    path: Path


def load_suite(file: Path) -> Suite:
    """Read one suite file.

    Raises:
        SpecError: naming the file and key (unknown keys, wrong types, no members, a member listed twice).
    """
    data, _ = read_toml(file, "suite", SpecError)
    parsed = structure_in_file(data, _SuiteFile, file, "")
    if not parsed.benchmarks:
        raise SpecError(f"{file}: benchmarks: a suite needs at least one benchmark")
    if len(set(parsed.benchmarks)) != len(parsed.benchmarks):
        raise SpecError(f"{file}: benchmarks: a benchmark is listed more than once")
    return Suite(parsed.name, parsed.description, parsed.benchmarks, file)


def discover_suites(env: Mapping[str, str] | None = None) -> dict[str, Suite]:
    """The built-in suites, then those under each ``MILL_SPEC_PATH`` directory's ``suites/`` (a later one
    with the same name replaces an earlier one, as for specs)."""
    env = os.environ if env is None else env
    folders = [builtin_spec_dir() / SUITES_FOLDER]
    folders += [Path(d) / SUITES_FOLDER for d in filter(None, env.get(SPEC_PATH_ENV, "").split(os.pathsep))]
    suites: dict[str, Suite] = {}
    for folder in folders:
        for file in sorted(folder.glob("*.toml")):
            suite = load_suite(file)
            suites[suite.name] = suite
    return suites


def expand_benchmarks(names: Sequence[str], suites: Mapping[str, Suite], registry: SpecRegistry) -> list[str]:
    """``names`` with every suite replaced by its members (a benchmark or variant of the same name wins).

    Raises:
        UnknownBenchmarkError: a suite member that no spec defines, naming the suite file.
    """
    expanded: list[str] = []
    for name in names:
        if name in suites and not _is_benchmark(name, registry):
            suite = suites[name]
            for member in suite.benchmarks:
                try:
                    registry.select(member)
                except UnknownBenchmarkError as exc:
                    raise UnknownBenchmarkError(f"{suite.path}: suite {suite.name!r}: {exc}") from None
            expanded.extend(suite.benchmarks)
        else:
            expanded.append(name)
    return expanded


def _is_benchmark(name: str, registry: SpecRegistry) -> bool:
    return name in registry.specs or any(name in spec.variants for spec in registry.specs.values())
