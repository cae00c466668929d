"""The likelihood_mcq kind's pure parts: the generative kind's question, the likeliest letter graded, one mark.

A run through the engine (its rows, and that it stays out of the rollup) is in test_engine.py.
"""

from __future__ import annotations

import polars as pl
import pytest
from attrs import evolve

from mill.core.errors import NonFiniteError
from mill.core.kinds import generative_mcq, likelihood_mcq
from mill.core.kinds.likelihood_mcq import LikelihoodMcqVariant
from mill.core.registry import builtin_spec_dir
from mill.core.spec import Spec
from mill.core.specfile import load_spec
from mill.core.task_kind import raw_schema


@pytest.fixture(scope="module")
def imagenet() -> Spec:
    return load_spec(builtin_spec_dir() / "imagenet.toml")


def test_the_question_is_the_generative_kinds(imagenet: Spec) -> None:
    variant = imagenet.variants["imagenet_mcq_likelihood"]
    letters = likelihood_mcq.kind.build_task(imagenet, "v", variant, 3)
    generative = generative_mcq.kind.build_task(imagenet, "v", imagenet.variants["imagenet_mcq"], 3)
    assert letters.letters == tuple("ABCDEFGHIJ")
    assert all(letters.question(key, 17) == generative.question(key, 17) for key in ("a", "b", "c"))
    assert likelihood_mcq.kind.settings(variant) == {}


def test_a_tie_goes_to_the_earlier_letter_and_widths_must_match(imagenet: Spec) -> None:
    variant = evolve(imagenet.variants["imagenet_mcq_likelihood"], n_options=3)
    task = likelihood_mcq.kind.build_task(imagenet, "v", variant, 3)
    columns = {"key": ["a"], "shard": ["s"], "gold": [0], "prompt": ["p"], "letter_mass": [0.8], "skipped": [None]}
    raw = pl.DataFrame({**columns, "letter_logprobs": [[-2.0, -1.0, -1.0]]}).select(
        [pl.col(name).cast(dtype) for name, dtype in raw_schema(likelihood_mcq.kind).items()]
    )
    scored = likelihood_mcq.score(task, variant, raw.drop("skipped"), 0)
    assert scored.frame["prediction"].to_list() == ["B"]
    assert scored.frame["correct"].to_list() == [task.question("a", 0).gold_letter == "B"]
    assert scored.metrics["letter_mass"].value == pytest.approx(0.8)
    too_narrow = raw.drop("skipped").with_columns(pl.Series("letter_logprobs", [[-1.0, -2.0]]))
    with pytest.raises(ValueError, match="2 letter log-probabilities for 3 letters"):
        likelihood_mcq.score(task, variant, too_narrow, 0)
    overflowed = raw.drop("skipped").with_columns(pl.Series("letter_logprobs", [[float("nan"), -1.0, -2.0]]))
    with pytest.raises(NonFiniteError, match=r"non-finite \(NaN or inf\) letter scores for 1 of 1 samples: 'a'"):
        likelihood_mcq.score(task, variant, overflowed, 0)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"n_options": 11}, ("n_options", "expected 2 to 10 (at most the 20 classes and 10 letters")),
        ({"n_options": 1}, ("n_options", "expected 2 to 10")),
        ({"prompt": "Which one?"}, ("prompt", "must contain the placeholder {options}")),
    ],
)
def test_check_variant(imagenet: Spec, change: dict[str, object], problem: tuple[str, str]) -> None:
    variant: LikelihoodMcqVariant = evolve(imagenet.variants["imagenet_mcq_likelihood"], **change)
    ((key, message),) = likelihood_mcq.kind.check_variant(variant, 20)
    assert key == problem[0] and message.startswith(problem[1])
    assert likelihood_mcq.kind.check_variant(imagenet.variants["imagenet_mcq_likelihood"], 20) == []


def test_both_multiple_choice_kinds_share_one_mark() -> None:
    # One legend entry for both: the CLI's tables (tests/test_tables.py of mill-cli) list each mark once.
    assert likelihood_mcq.kind.mark == generative_mcq.kind.mark is not None
