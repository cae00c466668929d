"""Suites: loading and expansion into members (collect's mean is tested with the CLI's suite tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mill.core.errors import SpecError, UnknownBenchmarkError
from mill.core.registry import SpecRegistry
from mill.core.suite import Suite, discover_suites, expand_benchmarks, load_suite, missing_members, suite_mean

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
        ('name = "s"\ndescription = "d"\nbenchmarks = ["a"]\n[unavailable]\na = "no kind"\n', "unavailable.a"),
        ('name = "s"\ndescription = "d"\nbenchmarks = ["a"]\n[unavailable]\nb = " "\n', "with the reason"),
    ],
)
def test_suite_mistakes(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(SpecError, match=message):
        load_suite(tmp_path / "s.toml")


def _suite(benchmarks: tuple[str, ...], unavailable: dict[str, str]) -> Suite:
    return Suite("s", "d", benchmarks, Path("s.toml"), unavailable)


def test_suite_mean_by_hand() -> None:
    table = {"a": 0.1, "b": 0.2, "c": 0.6}
    plain = _suite(("a", "b", "c"), {})
    assert suite_mean(plain, table).value == pytest.approx(0.3)
    assert (suite_mean(plain, table).present, suite_mean(plain, table).size) == (3, 3)
    incomplete = suite_mean(plain, {"a": 0.1, "c": None})
    assert (incomplete.value, incomplete.present, incomplete.size) == (None, 1, 3)
    # DataComp's average is np.mean over the main metrics it has: with WinoGAViL unavailable, over the others,
    # and the mean carries what is missing.
    datacomp_like = _suite(("a", "b", "c"), {"wino": "no kind"})
    mean = suite_mean(datacomp_like, table)
    assert (mean.value, mean.present, mean.size, mean.unavailable) == (pytest.approx(0.3), 3, 4, ("wino",))
    # A value for the unavailable member (a stray row) is not averaged in.
    assert suite_mean(datacomp_like, {**table, "wino": 1.0}).value == pytest.approx(0.3)


def test_members_without_a_spec_are_all_named(tmp_path: Path, registry: SpecRegistry) -> None:
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "later.toml").write_text(
        'name = "later"\ndescription = "d"\nbenchmarks = ["pets", "cifar_ten", "food_101"]\n'
    )
    suites = discover_suites(env={"MILL_SPEC_PATH": str(tmp_path)})
    assert list(missing_members(suites["later"], registry)) == ["cifar_ten", "food_101"]
    named = r"later\.toml: suite 'later': no spec defines cifar_ten, food_101;"
    with pytest.raises(UnknownBenchmarkError, match=named):
        expand_benchmarks(["later"], suites, registry)
