"""The command line as users meet it: the published commands with ``--output_dir`` before the
subcommand, output read from a pipe or a log (no terminal, no ``COLUMNS``), and the commands that never
evaluate starting without the heavy libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from attrs import frozen

from mill.cli.main import EXIT_USER_ERROR
from mill.core.results import read_aggregate

#: Libraries that ``mill --help``, ``mill ls`` and ``mill collect`` must not import.
HEAVY = ("torch", "transformers", "open_clip", "matplotlib", "plotly", "bokeh", "altair", "seaborn")

CLIP_LIMIT = 12
VLM_LIMIT = 4


@frozen
class Piped:
    code: int
    out: str
    err: str


def _no_terminal_env(**extra: str) -> dict[str, str]:
    """The environment of a batch job: no COLUMNS, nothing that makes rich believe in a terminal."""
    env = {**os.environ, **extra}
    for name in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "MILL_OUTPUT_DIR"):
        env.pop(name, None)
    return env


def piped(*argv: str, env: dict[str, str] | None = None) -> Piped:
    """``mill ARGV`` as a real process with stdout and stderr going to pipes (no terminal)."""
    done = subprocess.run(
        [sys.executable, "-m", "mill.cli", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env or _no_terminal_env(),
        check=False,
    )
    return Piped(done.returncode, done.stdout, done.stderr)


@frozen
class Published:
    """The three commands of the ImageNet page, run with the flags where the page writes them."""

    output_dir: Path
    clip_eval: Piped
    vlm_eval: Piped
    collect: Piped
    clip_identity: str
    vlm_identity: str


@pytest.fixture(scope="module")
def published(
    tmp_path_factory: pytest.TempPathFactory,
    shards: Path,
    cache_dir: Path,
    clip_model: str,
    vlm_model: str,
    zero_shot: Any,
) -> Published:
    # zero_shot first: its first run must find the shared classifier cache empty (this one then reuses it).
    del zero_shot
    data_root = tmp_path_factory.mktemp("mill_data")
    (data_root / "imagenet").symlink_to(shards, target_is_directory=True)
    out = tmp_path_factory.mktemp("published") / "results"
    env = _no_terminal_env(MILL_DATA_DIR=str(data_root), MILL_CACHE_DIR=str(cache_dir))
    # mill --output_dir ./results eval "clip[...]" imagenet   (and --limit, --cache_dir before eval too)
    clip_eval = piped("--output_dir", str(out), "--limit", str(CLIP_LIMIT), "eval", clip_model, "imagenet", env=env)
    assert clip_eval.code == 0, clip_eval.err
    # mill --output_dir ./results eval "Qwen/...[dtype=bfloat16]" imagenet --seed 42
    vlm_eval = piped(
        "--output-dir", str(out), "eval", vlm_model, "imagenet", "--seed", "42", "--limit", str(VLM_LIMIT), env=env
    )
    assert vlm_eval.code == 0, vlm_eval.err
    # mill --output_dir ./results collect --metric acc   (--all: both runs are --limit runs)
    collect = piped("--output_dir", str(out), "collect", "--metric", "acc", "--all", env=env)
    assert collect.code == 0, collect.err
    identities = read_aggregate(out).get_column("model").unique().sort().to_list()
    clip_identity = next(i for i in identities if i.endswith(".pt"))
    vlm_identity = next(i for i in identities if i != clip_identity)
    return Published(out, clip_eval, vlm_eval, collect, clip_identity, vlm_identity)


def test_group_output_dir_and_limit_reach_eval(published: Published) -> None:
    rows = read_aggregate(published.output_dir)
    limits = dict(rows.group_by("model").agg(pl.col("limit").first()).iter_rows())
    assert limits == {published.clip_identity: CLIP_LIMIT, published.vlm_identity: VLM_LIMIT}
    assert set(rows.filter(pl.col("model") == published.vlm_identity).get_column("seed")) == {42}


def test_collect_reads_the_group_output_dir(published: Published) -> None:
    out = published.collect.out
    assert published.clip_identity in out
    assert published.vlm_identity in out
    assert "†" in out


def test_the_subcommand_flag_wins_over_the_group_flag(published: Published, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    wins = piped("--output_dir", str(empty), "collect", "--all", "--output_dir", str(published.output_dir))
    assert wins.code == 0, wins.err
    assert published.clip_identity in wins.out
    loses = piped("--output_dir", str(published.output_dir), "collect", "--all", "--output_dir", str(empty))
    assert loses.code == 1
    assert str(empty / "aggregate.csv") in loses.err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("--cache_dir", "/tmp/x", "collect"), "--cache_dir"),
        (("--limit", "3", "collect"), "--limit"),
        (("--output-dir", "/tmp/x", "ls"), "--output_dir"),
    ],
)
def test_a_group_flag_the_subcommand_does_not_use_exits_2(
    mill_in_process: object, argv: tuple[str, ...], flag: str
) -> None:
    outcome = mill_in_process(*argv)  # type: ignore[operator]
    assert outcome.code == EXIT_USER_ERROR
    assert f"does not use {flag}" in outcome.err
    assert argv[-1] in outcome.err


# --- Output that survives logs and pipes --------------------------------------------------------


def test_piped_eval_prints_whole_names_on_stdout_and_progress_on_stderr(published: Published) -> None:
    # Laid out at 80 columns (rich's guess with no terminal) these rows would be cut.
    assert _widest(published.clip_eval.out) > 80
    assert _widest(published.vlm_eval.out) > 80
    assert published.clip_identity in published.clip_eval.out
    assert "mean_per_class_recall" in published.clip_eval.out
    assert "…" not in published.clip_eval.out
    assert "Results" in published.clip_eval.out
    assert "evaluating" in published.clip_eval.err
    assert "evaluating" not in published.clip_eval.out
    assert published.vlm_identity in published.vlm_eval.out
    assert "imagenet_mcq_acc" in published.vlm_eval.out


def test_piped_collect_shows_whole_names(published: Published) -> None:
    assert "…" not in published.collect.out
    rows = [line for line in published.collect.out.splitlines() if published.vlm_identity in line]
    assert rows, published.collect.out


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_ls_piped_into_grep_finds_whole_names() -> None:
    done = subprocess.run(
        f"{sys.executable} -m mill.cli ls | grep imagenet_mcq_acc",
        shell=True,
        capture_output=True,
        text=True,
        env=_no_terminal_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    cells = [cell.strip() for cell in done.stdout.split("│")]
    assert {"imagenet", "imagenet_mcq", "generative_mcq", "imagenet_mcq_acc"} <= set(cells)
    assert any(cell.endswith("imagenet.toml") for cell in cells), done.stdout


# --- Start-up: no heavy library for commands that never evaluate ----------------------------------

_REPORT_MODULES = """
import json, sys
from mill.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("\\nLOADED=" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)))
"""


@pytest.mark.parametrize("command", ["--help", "ls", "collect"])
def test_commands_that_never_evaluate_import_no_heavy_library(command: str, published: Published) -> None:
    argv = [command, "--output_dir", str(published.output_dir), "--all"] if command == "collect" else [command]
    script = f"HEAVY = {HEAVY!r}\n{_REPORT_MODULES}"
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=_no_terminal_env(), check=False
    )
    loaded_line = done.stderr.rsplit("LOADED=", 1)
    assert len(loaded_line) == 2, done.stderr
    assert json.loads(loaded_line[1]) == []
    # The command did its work: an empty output would prove nothing.
    expected = {"--help": "report", "ls": "imagenet_mcq_acc", "collect": published.clip_identity}[command]
    assert expected in done.stdout


def test_the_heavy_library_check_can_fail() -> None:
    script = f"HEAVY = {HEAVY!r}\nimport torch\n{_REPORT_MODULES}"
    done = subprocess.run(
        [sys.executable, "-c", script, "--help"], capture_output=True, text=True, env=_no_terminal_env(), check=False
    )
    assert "torch" in json.loads(done.stderr.rsplit("LOADED=", 1)[1])


def test_quiet_shows_nothing_not_even_the_model_loading_bar(
    tmp_path: Path, shards: Path, cache_dir: Path, vlm_model: str
) -> None:
    # transformers draws its own "Loading weights" bar, which --quiet let through.
    env = _no_terminal_env(MILL_CACHE_DIR=str(cache_dir))
    done = piped(
        "eval",
        vlm_model,
        "imagenet",
        "--data_dir",
        str(shards),
        "--limit",
        "2",
        "--output_dir",
        str(tmp_path),
        "--quiet",
        env=env,
    )
    assert done.code == 0, done.err
    assert done.err == "" and done.out == "", done.err
