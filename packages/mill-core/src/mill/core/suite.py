"""Suites: TOML files that name a list of benchmarks, run as one and summarised by an unweighted mean.

A suite file lives in a ``suites/`` folder beside the specs (the built-in ``specs/suites/``, or
``DIR/suites/`` for each directory of ``MILL_SPEC_PATH``)::

    name = "imagenet_robustness"
    description = "..."
    benchmarks = ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "objectnet"]
    unavailable = { winogavil = "why Mill cannot evaluate it" }   # optional

``mill eval MODEL SUITE`` runs every member (validated up front, like a comma list); ``mill collect`` shows
the members and their mean only where every member has a result with the same settings (the CLI's
``mill.cli.suite_tables``). The mean is a view: it is never written to aggregate.csv. A member listed under
``unavailable`` counts in the suite's size but is never run: the mean is over the others, and says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import Factory, frozen

from mill.core.errors import SpecError, UnknownBenchmarkError
from mill.core.registry import SPEC_PATH_ENV, SpecRegistry, builtin_spec_dir
from mill.core.spec import Spec
from mill.core.specfile import structure_in_file
from mill.core.tomlfile import read_toml

#: The folder, beside a directory of specs, that holds suite files.
SUITES_FOLDER = "suites"


@frozen
class _SuiteFile:
    name: str
    description: str
    benchmarks: tuple[str, ...]
    unavailable: dict[str, str] = Factory(dict)


@frozen
class Suite:
    """A validated suite file: its members are benchmark (or variant) names, in display order."""

    name: str
    description: str
    benchmarks: tuple[str, ...]
    path: Path
    #: Members the suite counts but Mill cannot evaluate (no task kind for them), each with the reason.
    unavailable: Mapping[str, str] = Factory(dict)

    @property
    def size(self) -> int:
        """How many members the suite has, those Mill cannot evaluate included."""
        return len(self.benchmarks) + len(self.unavailable)


@frozen
class SuiteMean:
    """A suite's score over its members' values (each member's headline metric): their unweighted mean, as
    DataComp's ``aggregate_scores.py`` averages its datasets' main metrics, or None unless every member Mill
    can evaluate has a value; with how many have one, of how many members, and which members Mill cannot
    evaluate (to be named wherever the mean is shown, never silently dropped)."""

    value: float | None
    present: int
    size: int
    unavailable: tuple[str, ...]


def suite_mean(suite: Suite, values: Mapping[str, float | None]) -> SuiteMean:
    """The mean of ``values`` (by member name) over ``suite``'s evaluable members (pure)."""
    present = [value for member in suite.benchmarks if (value := values.get(member)) is not None]
    mean = sum(present) / len(present) if len(present) == len(suite.benchmarks) else None
    return SuiteMean(mean, len(present), suite.size, tuple(suite.unavailable))


def suite_metric(suite: Suite, specs: Mapping[str, Spec]) -> str:
    """The metric a suite's mean averages: the members' common headline metric, else "headline metric"
    (DataComp's suite mixes top-1, mean per-class recall, retrieval recall and worst-group accuracy)."""
    metrics = {specs[m].headline_metric if m in specs else "acc" for m in suite.benchmarks}
    return metrics.pop() if len(metrics) == 1 else "headline metric"


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
    for member, reason in parsed.unavailable.items():
        if member in parsed.benchmarks or not reason.strip():
            raise SpecError(f"{file}: unavailable.{member}: name a member not in benchmarks, with the reason")
    return Suite(parsed.name, parsed.description, parsed.benchmarks, file, dict(parsed.unavailable))


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
            missing = missing_members(suite, registry)
            if len(missing) == 1:
                raise UnknownBenchmarkError(f"{suite.path}: suite {suite.name!r}: {next(iter(missing.values()))}")
            if missing:
                raise UnknownBenchmarkError(
                    f"{suite.path}: suite {suite.name!r}: no spec defines {', '.join(missing)}; add them with --spec"
                    " FILE or a directory in MILL_SPEC_PATH (`mill ls` lists the known benchmarks)"
                )
            expanded.extend(suite.benchmarks)
        else:
            expanded.append(name)
    return expanded


def missing_members(suite: Suite, registry: SpecRegistry) -> dict[str, str]:
    """The members of ``suite`` that no spec defines, each with the registry's message (close matches)."""
    missing = {}
    for member in suite.benchmarks:
        try:
            registry.select(member)
        except UnknownBenchmarkError as exc:
            missing[member] = str(exc)
    return missing


def _is_benchmark(name: str, registry: SpecRegistry) -> bool:
    return name in registry.specs or any(name in spec.variants for spec in registry.specs.values())
