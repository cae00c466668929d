"""DataComp's suites: the files are what scripts/derive_datacomp_suites.py writes from DataComp's task list and
aggregate_scores.py, and (once every DataComp spec exists) each member is a spec scored by DataComp's main metric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mill.core.registry import SpecRegistry, builtin_spec_dir
from mill.core.suite import discover_suites, expand_benchmarks

#: DataComp's main metrics as Mill's specs name them, where Mill's name is settled by the specs on main.
KNOWN_METRICS = {"acc1": "acc", "mean_per_class_recall": "mean_per_class_recall", "mean_recall@1": "mean_recall@1"}


def test_suite_files_are_what_the_script_writes(script: Callable[[str], Any]) -> None:
    derive = script("derive_datacomp_suites")
    suites = discover_suites(env={})
    for file in derive.SUITES:
        assert (builtin_spec_dir() / "suites" / file).read_text(encoding="utf-8") == derive.suite_text(file), file
    datacomp = suites["datacomp"]
    assert datacomp.size == 38 and len(datacomp.benchmarks) == 37
    assert dict(datacomp.unavailable).keys() == {"winogavil"}
    assert suites["datacomp_vtab"].size == 13 and suites["datacomp_distribution_shifts"].size == 6
    assert suites["datacomp_retrieval"].benchmarks == ("flickr30k", "mscoco")


def test_every_datacomp_member_is_a_spec_scored_by_its_main_metric(script: Callable[[str], Any]) -> None:
    """Over the real specs/: passes once the specs of all 37 evaluable datasets exist (this branch's suites name
    the ones added beside it)."""
    derive = script("derive_datacomp_suites")
    registry = SpecRegistry.discover(env={})
    suites = discover_suites(env={})
    members = expand_benchmarks(["datacomp"], suites, registry)
    assert len(members) == 37
    for _, title, name, metric, _ in derive.MEMBERS:
        if name in derive.UNAVAILABLE:
            continue
        spec = registry.specs[name]
        if metric in KNOWN_METRICS:
            assert spec.headline_metric == KNOWN_METRICS[metric], (title, spec.headline_metric)
