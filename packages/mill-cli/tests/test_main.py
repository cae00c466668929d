"""The ``mill`` command without any backend installed: install hints, suggestions, spec errors,
``collect`` in every format, and flag spellings."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mill.cli.main import EXIT_USER_ERROR
from mill.core.metrics import MetricValue
from mill.core.results import RunFacts, run_rows, upsert_aggregate
from mill.testing.cli import Mill
from mill.testing.facts import run_facts

CLIP_MODEL = "ViT-B-32/openai"
VLM_MODEL = "Qwen/Qwen2-VL-2B"


def test_hf_model_names_the_llm_distribution(mill: Mill) -> None:
    outcome = mill("eval", "hf[path=x]", "imagenet")
    assert outcome.code == EXIT_USER_ERROR
    assert "pip install ./packages/mill-backends-llm" in outcome.err
    assert "Traceback" not in outcome.err


def test_hub_id_names_the_llm_distribution(mill: Mill) -> None:
    # A bare hub id resolves to the hf backend, so its hint is the same as hf[...]'s.
    outcome = mill("eval", "Qwen/Qwen2-VL-2B-Instruct", "imagenet")
    assert outcome.code == EXIT_USER_ERROR
    assert "pip install ./packages/mill-backends-llm" in outcome.err


def test_clip_model_names_the_clip_distribution(mill: Mill) -> None:
    outcome = mill("eval", "clip[path=ViT-B-32,pretrained=openai]", "imagenet")
    assert outcome.code == EXIT_USER_ERROR
    assert "pip install ./packages/mill-backends-clip" in outcome.err


def test_unknown_backend_suggests_a_close_match_and_lists_installed(mill: Mill) -> None:
    outcome = mill("eval", "clpi[path=ViT-B-32]", "imagenet")
    assert outcome.code == EXIT_USER_ERROR
    assert "unknown backend 'clpi'" in outcome.err
    assert "Did you mean clip" in outcome.err
    assert "Installed backends: none" in outcome.err


def test_unknown_benchmark_suggests_close_matches(mill: Mill) -> None:
    outcome = mill("eval", "hf[path=x]", "imagenett")
    assert outcome.code == EXIT_USER_ERROR
    assert "unknown benchmark or variant 'imagenett'" in outcome.err
    assert "Did you mean imagenet" in outcome.err


BROKEN_SPEC = """\
name = "mini"
description = "two classes"
seed = 1
headline_metric = "acc"

[dataset]
source = "shards"
split = "test"
image_member = "0.webp"
label_member = "cls"
n_samples = 4

[classes]
count = 2
names = ["cat", "dog"]

[templates]
list = ["a photo of a {c}."]

[variants.mini]
kind = "zero_shot"
metric = "acc"
top_k = "five"
"""


def test_spec_error_names_file_and_key(mill: Mill, tmp_path: Path) -> None:
    spec = tmp_path / "broken.toml"
    spec.write_text(BROKEN_SPEC)
    outcome = mill("eval", "hf[path=x]", "mini", "--spec", str(spec))
    assert outcome.code == EXIT_USER_ERROR
    assert str(spec) in outcome.err
    assert "variants.mini.top_k" in outcome.err
    assert "'five'" in outcome.err


def test_spec_error_stops_ls_too(mill: Mill, tmp_path: Path) -> None:
    spec = tmp_path / "broken.toml"
    spec.write_text(BROKEN_SPEC.replace('kind = "zero_shot"', 'kind = "zero-shot"').replace('"five"', "5"))
    outcome = mill("ls", "--spec", str(spec))
    assert outcome.code == EXIT_USER_ERROR
    assert f"{spec}: variants.mini.kind" in outcome.err


def _table_rows(text: str) -> list[list[str]]:
    """The body rows of rich tables printed in ``text``, each as its stripped cells."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def test_ls_lists_builtin_variants_and_no_backend(mill: Mill, monkeypatch: pytest.MonkeyPatch) -> None:
    # rich fits tables to the terminal; a wide one keeps every cell whole.
    monkeypatch.setenv("COLUMNS", "400")
    outcome = mill("ls")
    assert outcome.code == 0
    rows = _table_rows(outcome.out)
    assert ["imagenet", "imagenet", "zero_shot", "acc"] in [row[:4] for row in rows]
    assert ["imagenet", "imagenet_mcq", "generative_mcq", "imagenet_mcq_acc"] in [row[:4] for row in rows]
    # No backend installed: the Backends table has no rows, only its title and header.
    assert "Backends" in outcome.out
    assert all(len(row) != 2 for row in rows)


def test_ls_shows_a_suite_member_no_spec_defines_and_eval_names_each(
    mill: Mill, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "later.toml").write_text(
        'name = "later"\ndescription = "d"\nbenchmarks = ["pets", "cifar_ten", "food_101"]\n'
        '[unavailable]\nwinogavil = "no kind for it"\n'
    )
    monkeypatch.setenv("MILL_SPEC_PATH", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")
    listed = mill("ls")
    assert listed.code == 0, listed.err
    (row,) = [row for row in _table_rows(listed.out) if row[0] == "later"]
    assert row[1] == (
        "pets, cifar_ten (no spec defines it), food_101 (no spec defines it), winogavil (not evaluable, see the file)"
    )
    refused = mill("eval", "clip[path=ViT-B-32]", "later")
    assert refused.code == EXIT_USER_ERROR
    assert "suite 'later': no spec defines cifar_ten, food_101;" in refused.err and "Traceback" not in refused.err


def _facts(model: str, task_type: str, *, run_id: str, limit: int | None = None) -> RunFacts:
    return run_facts(
        model=model,
        task_type=task_type,
        n_samples=50_000 if limit is None else limit,
        limit=limit,
        settings="precision=amp",
        run_id=run_id,
        output_file=f"outputs/{run_id}.parquet",
        finished_at=f"2026-11-29T12:00:0{len(run_id) % 10}+00:00",
    )


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """An output directory holding a CLIP zero-shot run, a VLM MCQ run and a --limit smoke run."""
    out = tmp_path / "results"
    zero_shot = {
        "acc": MetricValue(0.6332, 0.002),
        "acc5": MetricValue(0.8884, 0.0014),
        "mean_per_class_recall": MetricValue(0.6331, 0.002),
    }
    mcq = {"imagenet_mcq_acc": MetricValue(0.55, 0.01), "unparsed_rate": MetricValue(0.02, 0.001)}
    upsert_aggregate(
        out, run_rows(_facts(CLIP_MODEL, "zero_shot", run_id="clip1"), "imagenet", zero_shot, ("acc", "acc"))
    )
    upsert_aggregate(
        out,
        run_rows(_facts(VLM_MODEL, "generative_mcq", run_id="vlm1"), "imagenet_mcq", mcq, ("imagenet_mcq_acc", "acc")),
    )
    smoke = {"acc": MetricValue(0.125, 0.1), "acc5": MetricValue(0.5, 0.1), "mean_per_class_recall": MetricValue(0, 0)}
    upsert_aggregate(
        out, run_rows(_facts("smoke/model", "zero_shot", run_id="s", limit=8), "imagenet", smoke, ("acc", "acc"))
    )
    return out


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_collect_csv(mill: Mill, results_dir: Path) -> None:
    outcome = mill("collect", "--output_dir", str(results_dir), "--format", "csv")
    assert outcome.code == 0
    rows = _csv_rows(outcome.out)
    cells = {(row["metric"], row["model"]): row for row in rows}
    assert cells["acc", CLIP_MODEL]["imagenet"] == "0.6332"
    # The MCQ variant's rollup row lines up under the benchmark, marked as multiple choice.
    assert cells["acc", VLM_MODEL]["imagenet"] == "0.5500†"
    assert cells["imagenet_mcq_acc", VLM_MODEL]["imagenet_mcq"] == "0.5500†"
    assert cells["acc5", CLIP_MODEL]["imagenet"] == "0.8884"
    # The --limit smoke run is left out unless --all.
    assert all(row["model"] != "smoke/model" for row in rows)


def test_collect_all_includes_limit_runs(mill: Mill, results_dir: Path) -> None:
    outcome = mill("collect", "--output_dir", str(results_dir), "--format", "csv", "--all", "--metric", "acc")
    assert outcome.code == 0
    rows = _csv_rows(outcome.out)
    assert {row["model"] for row in rows} == {CLIP_MODEL, VLM_MODEL, "smoke/model"}
    assert {row["metric"] for row in rows} == {"acc"}
    # A --limit run's cell says how many samples it holds, and the legend says what that means.
    assert {row["model"]: row["imagenet"] for row in rows}["smoke/model"] == "0.1250 (n=8)"
    table = mill("collect", "--output_dir", str(results_dir), "--all", "--metric", "acc")
    assert "0.1250 (n=8)" in table.out and "(n=N) a --limit run of N samples" in table.out


def test_collect_names_an_unknown_metric_and_the_known_ones(mill: Mill, results_dir: Path) -> None:
    outcome = mill("collect", "--output_dir", str(results_dir), "--metric", "accuracy")
    assert outcome.code == EXIT_USER_ERROR
    assert outcome.err.strip() == (
        "error: --metric accuracy: no stored result has this metric; they have "
        "acc, acc5, imagenet_mcq_acc, mean_per_class_recall, unparsed_rate"
    )


def test_version(mill: Mill) -> None:
    outcome = mill("--version")
    assert outcome.code == 0
    found = re.fullmatch(r"mill (\S+) \((.*)\)\n", outcome.out)
    assert found, outcome.out
    parts = dict(part.split(" ") for part in found.group(2).split(", "))
    assert parts["mill-cli"] == found.group(1) and {"mill-core", "mill-data"} <= set(parts)


def test_collect_json(mill: Mill, results_dir: Path) -> None:
    outcome = mill("collect", "--output_dir", str(results_dir), "--format", "json")
    assert outcome.code == 0
    tables = json.loads(outcome.out)
    assert set(tables) == {"acc", "acc5", "mean_per_class_recall", "imagenet_mcq_acc", "unparsed_rate"}
    acc = {row["model"]: row for row in tables["acc"]}
    # Numbers as numbers (they were strings); a cell's marks beside it, by column.
    assert acc[CLIP_MODEL]["imagenet"] == 0.6332 and "marks" not in acc[CLIP_MODEL]
    assert acc[VLM_MODEL]["imagenet"] == 0.55 and acc[VLM_MODEL]["marks"] == {"imagenet": "†"}


def test_collect_markdown(mill: Mill, results_dir: Path) -> None:
    outcome = mill("collect", "--output_dir", str(results_dir), "--format", "markdown", "--metric", "acc")
    assert outcome.code == 0
    lines = outcome.out.splitlines()
    assert lines[0] == "### acc"
    header = lines.index("| model | imagenet |")
    assert lines[header + 1] == "|---|---|"
    assert f"| {CLIP_MODEL} | 0.6332 |" in lines
    assert f"| {VLM_MODEL} | 0.5500† |" in lines
    assert "multiple-choice variant" in outcome.out


def test_collect_table(mill: Mill, results_dir: Path) -> None:
    outcome = mill("collect", "--output_dir", str(results_dir), "--metric", "acc")
    assert outcome.code == 0
    assert CLIP_MODEL in outcome.out
    assert "0.6332" in outcome.out
    assert "0.5500†" in outcome.out


def test_collect_with_nothing_to_show_fails(mill: Mill, tmp_path: Path) -> None:
    outcome = mill("collect", "--output_dir", str(tmp_path / "empty"))
    assert outcome.code != 0
    assert "aggregate.csv" in outcome.err


@pytest.mark.parametrize("flag", ["--output_dir", "--output-dir"])
def test_output_dir_spellings(mill: Mill, results_dir: Path, flag: str) -> None:
    outcome = mill("collect", flag, str(results_dir), "--format", "json", "--metric", "acc")
    assert outcome.code == 0
    assert {row["model"] for row in json.loads(outcome.out)["acc"]} == {CLIP_MODEL, VLM_MODEL}


def test_eval_accepts_both_flag_spellings(mill: Mill, tmp_path: Path) -> None:
    # Both spellings parse (an unknown flag would exit with click's usage status); the run then
    # stops at the missing backend, before writing anything.
    for flag in ("--output_dir", "--output-dir", "--allow-incomplete", "--allow_incomplete"):
        args = [flag] if flag.startswith("--allow") else [flag, str(tmp_path / "out")]
        outcome = mill("eval", "hf[path=x]", "imagenet", *args)
        assert outcome.code == EXIT_USER_ERROR, (flag, outcome.err)
        assert "mill-backends-llm" in outcome.err
    assert not (tmp_path / "out").exists()


def test_cli_imports_no_backend() -> None:
    # A fresh interpreter: the CLI must import without any backend, and must not pull one in.
    code = textwrap.dedent(
        """
        import sys
        import mill.cli.main
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "open_clip", "vllm"))
        heavy += sorted(m for m in sys.modules if m.startswith("mill.backends"))
        assert not heavy, heavy
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_rescore_with_nothing_to_grade_says_so(mill: Mill, results_dir: Path) -> None:
    # results_dir holds aggregate rows but no stored run (no outputs/ manifests): nothing is touched.
    before = (results_dir / "aggregate.csv").read_bytes()
    outcome = mill("rescore", "--output_dir", str(results_dir))
    assert outcome.code == 0, outcome.err
    assert f"no stored run in {results_dir / 'outputs'} has answers to grade again" in outcome.err
    assert (results_dir / "aggregate.csv").read_bytes() == before


def test_rescore_names_a_broken_manifest(mill: Mill, tmp_path: Path) -> None:
    manifest = tmp_path / "outputs" / "m" / "imagenet_mcq_0shot.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{not json", encoding="utf-8")
    outcome = mill("rescore", "--output_dir", str(tmp_path), "--dry-run")
    assert outcome.code == EXIT_USER_ERROR
    assert outcome.err.startswith(f"error: {manifest}: cannot read the run manifest")
    assert "move it aside" in outcome.err
