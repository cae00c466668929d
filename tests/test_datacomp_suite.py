"""DataComp's suites: the files are what scripts/derive_datacomp_suites.py writes from DataComp's task list and
aggregate_scores.py, and (once every DataComp spec exists) each member is a spec scored by DataComp's main metric."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve

from mill.backends.clip import backend as clip_backend
from mill.cli.main import EXIT_USER_ERROR
from mill.cli.suite_tables import mean_text
from mill.core.metrics import MetricValue
from mill.core.registry import SpecRegistry, builtin_spec_dir
from mill.core.results import RunFacts, run_rows, upsert_aggregate
from mill.core.suite import Suite, discover_suites, expand_benchmarks, suite_mean
from mill.data import write_synthetic_shards

REPO = Path(__file__).resolve().parents[1]
#: DataComp's main metrics as Mill's specs name them (the worst-group and F1 ones as the specs beside these do).
KNOWN_METRICS = {
    "acc1": "acc",
    "mean_per_class_recall": "mean_per_class_recall",
    "mean_recall@1": "mean_recall@1",
    "F1-macro_all": "macro_f1",
    "acc_worst_region": "worst_group_acc",
    "acc_wg": "worst_group_acc",
    "acc_top5_wg": "worst_group_acc5",
}


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


def test_every_datacomp_member_is_a_spec_scored_by_its_main_metric(
    script: Callable[[str], Any], mill_in_process: Any, hub_cache: Path, tmp_path: Path
) -> None:
    """Over the real specs/: passes once the specs of all 37 evaluable datasets exist (this branch's suites name
    the ones added beside it) and carry open_clip's figures (scripts/derive_openclip_reported.py run over them).
    Offline and with no data, `mill eval MODEL datacomp` names all 37 datasets and runs nothing."""
    derive = script("derive_datacomp_suites")
    models = [f"{name}/{tag}" for name, tag in script("derive_openclip_reported").MODELS]
    registry = SpecRegistry.discover(env={})
    suites = discover_suites(env={})
    members = expand_benchmarks(["datacomp"], suites, registry)
    assert len(members) == 37
    for _, title, name, metric, _ in derive.MEMBERS:
        if name in derive.UNAVAILABLE:
            continue
        spec = registry.specs[name]
        assert spec.headline_metric == KNOWN_METRICS[metric], (title, spec.headline_metric)
        assert [r.model for r in spec.reported if r.model in models] == models, name
    done = mill_in_process(
        "eval", "clip[path=ViT-B-32,pretrained=laion2b_s34b_b79k]", "datacomp", "--output_dir", str(tmp_path / "out"),
        "--cache_dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert done.code == EXIT_USER_ERROR
    assert done.err.startswith("error: 37 of 37 benchmarks have no data here; nothing was run:\n")
    assert all(f"\n  {name}: " in done.err for name in members)


#: The ImageNet-family specs on main, as a fixture suite (DataComp's group is their `_datacomp` copies).
SHIFTS = ("imagenet_sketch", "imagenet_v2", "imagenet_a", "imagenet_o", "imagenet_r", "objectnet")


@pytest.fixture
def shifts_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A suite of the six family specs on MILL_SPEC_PATH, in DataComp's distribution-shift group's order."""
    (tmp_path / "specs" / "suites").mkdir(parents=True)
    members = ", ".join(f'"{name}"' for name in SHIFTS)
    (tmp_path / "specs" / "suites" / "shifts.toml").write_text(
        f'name = "shifts"\ndescription = "d"\nbenchmarks = [{members}]\n'
    )
    monkeypatch.setenv("MILL_SPEC_PATH", str(tmp_path / "specs"))
    return "shifts"


def test_a_suite_run_loads_the_clip_model_once(
    mill_in_process: Any,
    clip_model: str,
    shifts_suite: str,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A suite of the six distribution-shift sets through `mill eval`: six runs, one open_clip load, and each
    run's manifest names its own classifier (nothing of one run leaks into the next one's facts)."""
    for name in SHIFTS:
        write_synthetic_shards(tmp_path / "data" / name, n_classes=6, per_class=1, n_shards=1, layout="clip_benchmark")
    monkeypatch.setenv("MILL_DATA_DIR", str(tmp_path / "data"))
    loads: list[object] = []
    real_load = clip_backend.load_model

    def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(clip_backend, "load_model", counted)
    out = tmp_path / "results"
    done = mill_in_process(
        "eval", clip_model, shifts_suite, "--output_dir", str(out), "--cache_dir", str(cache_dir),
        "--limit", "6",
    )  # fmt: skip
    assert done.code == 0, done.err
    assert len(loads) == 1
    # What the person sees says the same: one load, then the loaded weights reused by the five other runs.
    assert done.err.count(f"loading {clip_model}") == 1, done.err
    assert done.err.count(f"reusing the loaded {clip_model}") == len(SHIFTS) - 1, done.err
    manifests = [json.loads(path.read_text()) for path in sorted((out / "outputs").rglob("*.json"))]
    benchmarks = {m["benchmark"]: m["run_info"]["classifier_cache_key"] for m in manifests if "run_info" in m}
    assert set(benchmarks) == set(SHIFTS)
    # V2 and Sketch share ImageNet's 1000 classes (one classifier); A, R and O have their own 200; ObjectNet 113.
    assert len(set(benchmarks.values())) == 5


def test_offline_a_suite_fails_before_any_run_naming_every_missing_dataset(
    mill_in_process: Any,
    clip_model: str,
    shifts_suite: str,
    hub_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two of the six datasets are here, the others only on the Hub, which cannot be reached: one error, a line
    per missing dataset with the export to download, and nothing run (no model load, no result)."""
    for name in SHIFTS[:2]:
        write_synthetic_shards(tmp_path / "data" / name, n_classes=6, per_class=1, n_shards=1, layout="clip_benchmark")
    monkeypatch.setenv("MILL_DATA_DIR", str(tmp_path / "data"))
    loads: list[object] = []
    monkeypatch.setattr(clip_backend, "load_model", lambda *args, **kwargs: loads.append(args))
    out = tmp_path / "results"
    done = mill_in_process(
        "eval", clip_model, shifts_suite, "--output_dir", str(out),
        "--cache_dir", str(tmp_path / "cache"), "--limit", "6", "--quiet",
    )  # fmt: skip
    assert done.code == EXIT_USER_ERROR
    assert done.err.startswith("error: 4 of 6 benchmarks have no data here; nothing was run:\n")
    assert "Traceback" not in done.err
    registry = SpecRegistry.discover(env={})
    for name in SHIFTS[2:]:
        repo = registry.specs[name].dataset.source.removeprefix("hf://datasets/")
        (line,) = [line for line in done.err.splitlines() if line.startswith(f"  {name}: ")]
        assert "HF_HUB_OFFLINE" in line
        assert f"hf download {repo} --repo-type dataset" in done.err
        assert f"$MILL_DATA_DIR/{name}/test/*.tar" in done.err
    assert not any(f"  {name}: " in done.err for name in SHIFTS[:2])
    assert loads == []
    assert not (out / "aggregate.csv").exists()


def test_collect_reported_shows_the_delta_per_dataset_and_for_the_suite(
    mill_in_process: Any, facts: RunFacts, tmp_path: Path
) -> None:
    """DataComp's retrieval group for a model in open_clip's table: each dataset's Mill | Reported | Δ, and the
    suite's means over the two datasets Mill runs, saying WinoGAViL is missing."""
    registry = SpecRegistry.discover(env={})
    mill = {"flickr30k": 0.75, "mscoco": 0.5}
    for name, value in mill.items():
        rows = run_rows(evolve(facts, benchmark=name), name, {"mean_recall@1": MetricValue(value, 0.01)}, None)
        upsert_aggregate(tmp_path, rows)
    published = {name: next(r.value for r in registry.specs[name].reported if r.model == facts.model) for name in mill}
    done = mill_in_process(
        "collect", "--output_dir", str(tmp_path), "--reported", "--benchmarks", "datacomp_retrieval", "--format", "csv"
    )
    assert done.code == 0, done.err
    lines = list(csv.DictReader(io.StringIO(done.out)))
    for name, value in mill.items():
        (row,) = [r for r in lines if r.get("benchmark") == name and r["Model"] == facts.model]
        assert row["Mill"] == f"{value:.4f}" and row["Reported"] == f"{published[name]:.4f}"
        assert row["Δ"] == f"{round(value - published[name], 4) + 0.0:+.4f}"
    (suite,) = [r for r in lines if r.get("benchmark") == "datacomp_retrieval" and r["Model"] == facts.model]
    mill_mean, reported_mean = sum(mill.values()) / 2, sum(published.values()) / 2
    assert suite["Mill"] == f"{mill_mean:.4f} (2 of 3, winogavil missing)"
    assert suite["Reported"] == f"{reported_mean:.4f} (2 of 3, winogavil missing)"
    assert suite["Δ"] == f"{round(mill_mean - reported_mean, 4) + 0.0:+.4f}"


def _page_tables() -> tuple[list[list[str]], list[list[str]]]:
    """The per-dataset and per-suite tables of docs/reproducibility/datacomp.md, as rows of cells."""
    text = (REPO / "docs" / "reproducibility" / "datacomp.md").read_text(encoding="utf-8")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    datasets = [r for r in rows if len(r) == 10 and r[0] != "Dataset"]
    suites = [r for r in rows if len(r) == 9 and r[0] != "Suite"]
    return datasets, suites


def test_the_reproducibility_page_holds_the_specs_figures_and_datacomps_average(script: Callable[[str], Any]) -> None:
    """The page's figures are the specs'; Mill's suite mean of all 38 of them is open_clip's published
    38-dataset average (to its four decimals) for each model; the suite rows are Mill's means over the members."""
    reported: Any = script("derive_openclip_reported")
    members: Any = script("derive_datacomp_suites")
    models = [f"{name}/{tag}" for name, tag in reported.MODELS]
    datasets, suite_rows = _page_tables()
    assert [row[0] for row in datasets] == [title for _, title, *_ in members.MEMBERS]
    figures = {name: row for (_, _, name, *_), row in zip(members.MEMBERS, datasets, strict=True)}
    specs = SpecRegistry.discover(env={}).specs
    for name, row in figures.items():
        for column, model in enumerate(models):
            if name in specs:
                (value,) = [r.value for r in specs[name].reported if r.model == model]
                assert float(row[2 + 2 * column]) == value, (name, model)
            assert row[3 + 2 * column] == "—"
    everything = Suite("all", "d", tuple(figures), Path("all.toml"))
    (published,) = [row for row in suite_rows if "Average perf. on 38 datasets" in row[0]]
    suites = discover_suites(env={})
    for column, model in enumerate(models):
        values = {name: float(row[2 + 2 * column]) for name, row in figures.items()}
        assert suite_mean(everything, values).value == pytest.approx(float(published[1 + 2 * column]), abs=5e-5)
        for row in suite_rows[:-1]:
            assert row[1 + 2 * column] == mean_text(suite_mean(suites[row[0].strip("`")], values)), (row[0], model)
