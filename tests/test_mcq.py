"""ImageNet as generative multiple choice, end to end: a tiny VLM through ``mill eval`` picks the MCQ
variant by capability, asks the protocol's questions, and writes reproducible results."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mill.core.registry import SpecRegistry

MCQ_COLUMNS = [
    "key",
    "shard",
    "gold",
    "gold_letter",
    "options",
    "option_indices",
    "prompt",
    "response",
    "parsed_letter",
    "prediction",
    "correct",
]
LETTERS = "ABCDEFGHIJ"


def protocol_options(seed: int, variant: str, key: str, gold: int, n_options: int = 10) -> list[int]:
    """The published option draw, written out independently of mill.core.mcq."""
    rng = random.Random(f"{seed}|{variant}|{key}")
    options = rng.sample([i for i in range(1000) if i != gold], n_options - 1)
    options.append(gold)
    rng.shuffle(options)
    return options


@pytest.fixture(scope="module")
def classnames() -> tuple[str, ...]:
    return SpecRegistry.discover().specs["imagenet"].classnames


@pytest.fixture(scope="module")
def base(mcq_run: Any) -> pl.DataFrame:
    return mcq_run.per_sample()


def _responses(frame: pl.DataFrame) -> list[tuple[str, str]]:
    return list(frame.select("key", "response").iter_rows())


def test_vlm_on_imagenet_runs_the_mcq_variant(mcq_run: Any, shape: Any) -> None:
    rows = mcq_run.aggregate()
    found = {(row["task"], row["metric"]) for row in rows.iter_rows(named=True)}
    assert found == {("imagenet_mcq", "imagenet_mcq_acc"), ("imagenet_mcq", "unparsed_rate"), ("imagenet", "acc")}
    assert set(rows.get_column("task_type")) == {"generative_mcq"}
    assert set(rows.get_column("limit")) == {shape.mcq_limit}
    assert set(rows.get_column("n_samples")) == {shape.mcq_limit}
    # The rollup row carries the variant's accuracy under the benchmark's headline metric.
    value = {(row["task"], row["metric"]): row["performance"] for row in rows.iter_rows(named=True)}
    assert value["imagenet", "acc"] == value["imagenet_mcq", "imagenet_mcq_acc"]
    manifest = mcq_run.manifest()
    assert manifest["variant"] == "imagenet_mcq"
    assert manifest["backend"] == "hf"
    assert mcq_run.per_sample_path().name.startswith("imagenet_mcq_0shot")
    assert "seed" not in mcq_run.per_sample_path().name


def test_per_sample_parquet(base: pl.DataFrame, classnames: tuple[str, ...], shape: Any) -> None:
    assert base.columns == MCQ_COLUMNS
    assert base.height == shape.mcq_limit
    keys = base.get_column("key").to_list()
    assert keys == sorted(keys)
    # The subset spreads over every shard.
    assert base.get_column("shard").n_unique() == 3
    for row in base.iter_rows(named=True):
        assert row["options"] == [classnames[i] for i in row["option_indices"]]
        assert row["gold_letter"] == LETTERS[row["option_indices"].index(row["gold"])]
        assert row["correct"] == (row["prediction"] == row["gold_letter"])
    # unparsed = "wrong": nothing parsed, nothing predicted.
    assert base.get_column("prediction").to_list() == base.get_column("parsed_letter").to_list()


def test_responses_depend_on_the_sample(base: pl.DataFrame) -> None:
    assert base.get_column("response").n_unique() >= 3


def test_prompt_follows_the_protocol(base: pl.DataFrame) -> None:
    for row in base.iter_rows(named=True):
        lines = row["prompt"].split("\n")
        assert lines[0] == "Which of these categories best describes the image?"
        assert lines[1:-1] == [f"{letter}) {name}" for letter, name in zip(LETTERS, row["options"], strict=True)]
        assert lines[-1] == "Answer with the letter of the correct option."


def test_options_follow_the_protocol_draw(base: pl.DataFrame) -> None:
    for row in base.iter_rows(named=True):
        assert row["option_indices"] == protocol_options(42, "imagenet_mcq", row["key"], row["gold"])


def test_identical_runs_give_identical_responses(
    mill_eval: Any, vlm_model: str, mcq_flags: tuple[str, ...], base: pl.DataFrame
) -> None:
    again = mill_eval(vlm_model, "imagenet", *mcq_flags)
    assert again.outcome.code == 0, again.outcome.err
    assert _responses(again.per_sample()) == _responses(base)


def test_batch_size_does_not_change_responses(mill_eval: Any, vlm_dir: Path, mcq_run: Any, base: pl.DataFrame) -> None:
    # The baseline takes four at a time from the global --batch_size; here the model spec's
    # batch_size=1 beats that same flag. One sample a batch is slow, so this run takes 4 of the
    # baseline's 12 samples (--limit spreads both over the same evenly spaced positions), which sat
    # first, third and second in the baseline's batches.
    assert mcq_run.manifest()["resolved_args"]["batch_size"] == 4
    one = mill_eval(f"{vlm_dir}[dtype=float32,batch_size=1]", "imagenet", "--limit", "4", "--batch_size", "4")
    assert one.outcome.code == 0, one.outcome.err
    assert one.manifest()["resolved_args"]["batch_size"] == 1
    singles = _responses(one.per_sample())
    assert len(singles) == 4
    assert set(singles) <= set(_responses(base))


def test_seed_changes_the_options(
    mill_eval: Any, vlm_model: str, mcq_flags: tuple[str, ...], base: pl.DataFrame
) -> None:
    run = mill_eval(vlm_model, "imagenet", *mcq_flags, "--seed", "7")
    assert run.outcome.code == 0, run.outcome.err
    assert run.manifest()["seed"] == 7
    assert set(run.aggregate().get_column("seed")) == {7}
    assert "_seed7" in run.per_sample_path().name
    seeded = run.per_sample()
    assert seeded.get_column("key").to_list() == base.get_column("key").to_list()
    for row in seeded.iter_rows(named=True):
        assert row["option_indices"] == protocol_options(7, "imagenet_mcq", row["key"], row["gold"])
    assert seeded.get_column("option_indices").to_list() != base.get_column("option_indices").to_list()


# The question's columns as the generative variant writes them, then the letters' scores instead of a response.
LIKELIHOOD_COLUMNS = [
    *MCQ_COLUMNS[: MCQ_COLUMNS.index("response")],
    "letter_logprobs",
    "letter_mass",
    "prediction",
    "correct",
]


def test_likelihood_variant_end_to_end_without_a_rollup(
    mill_eval: Any, vlm_model: str, mcq_flags: tuple[str, ...], classnames: tuple[str, ...], shape: Any
) -> None:
    """Named, the letter-likelihood variant runs on the same model: the protocol's question, the likeliest
    letter chosen, and rows of its own only. The generative variant stays the one `task = imagenet` means."""
    run = mill_eval(vlm_model, "imagenet_mcq_likelihood", *mcq_flags)
    assert run.outcome.code == 0, run.outcome.err
    rows = run.aggregate()
    found = {(row["task"], row["metric"]) for row in rows.iter_rows(named=True)}
    assert found == {
        ("imagenet_mcq_likelihood", "imagenet_mcq_likelihood_acc"),
        ("imagenet_mcq_likelihood", "letter_mass"),
    }
    assert set(rows.get_column("task_type")) == {"likelihood_mcq"}
    assert run.manifest()["variant"] == "imagenet_mcq_likelihood"
    frame = run.per_sample()
    assert frame.columns == LIKELIHOOD_COLUMNS
    assert frame.height == shape.mcq_limit
    for row in frame.iter_rows(named=True):
        assert row["option_indices"] == protocol_options(42, "imagenet_mcq_likelihood", row["key"], row["gold"])
        assert row["options"] == [classnames[i] for i in row["option_indices"]]
        lines = [f"{letter}) {name}" for letter, name in zip(LETTERS, row["options"], strict=True)]
        assert row["prompt"].split("\n")[1:-1] == lines
        logprobs = row["letter_logprobs"]
        assert len(logprobs) == 10 and all(value < 0 for value in logprobs)
        assert row["prediction"] == LETTERS[logprobs.index(max(logprobs))]
        assert row["correct"] == (row["prediction"] == row["gold_letter"])
        assert 0 < row["letter_mass"] <= 1
        assert abs(row["letter_mass"] - sum(math.exp(value) for value in logprobs)) < 1e-9
    value = {(row["task"], row["metric"]): row["performance"] for row in rows.iter_rows(named=True)}
    assert value["imagenet_mcq_likelihood", "imagenet_mcq_likelihood_acc"] == frame.get_column("correct").mean()
    assert abs(value["imagenet_mcq_likelihood", "letter_mass"] - frame.get_column("letter_mass").mean()) < 1e-12
