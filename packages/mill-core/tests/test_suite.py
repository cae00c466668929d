"""Suites: loading and expansion into members (collect's mean is tested with the CLI's suite tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mill.core.errors import SpecError, UnknownBenchmarkError
from mill.core.registry import SpecRegistry
from mill.core.suite import discover_suites, expand_benchmarks, load_suite

ROBUSTNESS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "objectnet")


@pytest.fixture(scope="module")
def registry() -> SpecRegistry:
    return SpecRegistry.discover(env={})


def test_builtin_suites(registry: SpecRegistry) -> None:
    suites = discover_suites(env={})
    assert suites["imagenet_robustness"].benchmarks == ROBUSTNESS
    assert suites["imagenet_family"].benchmarks == ("imagenet", *ROBUSTNESS[:4], "imagenet_o", "objectnet")
    assert expand_benchmarks(["imagenet_robustness", "shapes"], suites, registry) == [*ROBUSTNESS, "shapes"]


def test_suite_with_unknown_member_names_the_file(tmp_path: Path, registry: SpecRegistry) -> None:
    (tmp_path / "suites").mkdir()
    file = tmp_path / "suites" / "mine.toml"
    file.write_text('name = "mine"\ndescription = "d"\nbenchmarks = ["imagenet", "imagenet_z"]\n')
    suites = discover_suites(env={"MILL_SPEC_PATH": str(tmp_path)})
    with pytest.raises(UnknownBenchmarkError, match=r"mine\.toml: suite 'mine': unknown benchmark .*'imagenet_z'"):
        expand_benchmarks(["mine"], suites, registry)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "s"\ndescription = "d"\nbenchmarks = []\n', "at least one benchmark"),
        ('name = "s"\ndescription = "d"\nbenchmarks = ["a", "a"]\n', "more than once"),
        ('name = "s"\ndescription = "d"\nbenchmarks = ["a"]\nweights = [1]\n', r"unknown key\(s\) weights"),
        ('name = "s"\nbenchmarks = ["a"]\n', "description: required key is missing"),
    ],
)
def test_suite_mistakes(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(SpecError, match=message):
        load_suite(tmp_path / "s.toml")
