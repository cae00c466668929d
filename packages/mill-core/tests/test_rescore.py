"""Tests for mill.core.rescore: re-parsing stored MCQ responses with the current parser."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from mill.core.errors import ResultsError
from mill.core.kinds.generative_mcq import OUTPUT_SCHEMA as MCQ_SCHEMA
from mill.core.mcq import make_question_fn, score_response, unparsable_guess
from mill.core.rescore import RESCORE_INPUT_COLUMNS, rescore_mcq

CLASSNAMES = [f"class {i}" for i in range(40)]
QUESTION_FN = make_question_fn(7, "toy_mcq", CLASSNAMES, 4, "Which?\n{options}\nAnswer with the letter.")


def stored_frame(responses: list[str | None], parsed: list[str | None]) -> pl.DataFrame:
    """A per-sample MCQ table as a run stores it, with ``parsed`` as an older parser gave it."""
    records: list[dict[str, Any]] = []
    for i, (response, parsed_letter) in enumerate(zip(responses, parsed, strict=True)):
        key, gold = f"s{i:07d}", (3 * i) % len(CLASSNAMES)
        question = QUESTION_FN(key, gold)
        records.append(
            {
                "key": key,
                "shard": "shard-000",
                "gold": gold,
                "gold_letter": question.gold_letter,
                "options": [CLASSNAMES[j] for j in question.option_indices],
                "option_indices": list(question.option_indices),
                "prompt": question.prompt,
                "response": response,
                "parsed_letter": parsed_letter,
                "prediction": parsed_letter,
                "correct": parsed_letter == question.gold_letter,
            }
        )
    return pl.DataFrame(records, schema=MCQ_SCHEMA)


# Responses whose stored parse (by the previous parser) differs from the current one, and some that do not.
STALE = [
    ("c", None),  # a bare lowercase letter
    ("A) x\nB) y\nC) z\nD) w", "D"),  # an echoed list
    ("<think>maybe A</think>\nB", "B"),
    ("<think>maybe A</think>\nD", "A"),  # a stale letter from inside the reasoning
    ('{"answer": "d"}', None),
    ("答案是C", None),
    ("Answer: B", "B"),
    ("I cannot tell.", None),
    (None, None),
]


def test_rescore_counts_changed_answers_and_rewrites_the_scored_columns() -> None:
    frame = stored_frame([r for r, _ in STALE], [p for _, p in STALE])
    result = rescore_mcq(frame, "wrong", 0)

    assert result.changed == 5
    assert result.frame["parsed_letter"].to_list() == ["C", None, "B", "D", "D", "C", "B", None, None]
    assert result.frame["prediction"].to_list() == result.frame["parsed_letter"].to_list()
    gold = result.frame["gold_letter"].to_list()
    assert result.frame["correct"].to_list() == [
        p == g for p, g in zip(result.frame["parsed_letter"], gold, strict=True)
    ]
    # Everything else is as stored: same columns in the same order, same rows in the same order.
    assert result.frame.schema == frame.schema
    untouched = [c for c in frame.columns if c not in ("parsed_letter", "prediction", "correct")]
    assert result.frame.select(untouched).equals(frame.select(untouched))


def test_rescore_agrees_with_scoring_at_evaluation_time() -> None:
    responses = [r or "" for r, _ in STALE]
    frame = stored_frame(responses, [None] * len(responses))
    for policy in ("wrong", "random"):
        result = rescore_mcq(frame, policy, 42)
        for row in result.frame.iter_rows(named=True):
            question = QUESTION_FN(row["key"], row["gold"])
            score = score_response(row["response"], question, row["options"], policy, 42)
            assert (row["parsed_letter"], row["prediction"], row["correct"]) == (
                score.parsed_letter,
                score.prediction,
                score.correct,
            )


def test_random_policy_guesses_only_for_unparsed_answers() -> None:
    frame = stored_frame(["I cannot tell.", "Answer: B"], [None, "B"])
    result = rescore_mcq(frame, "random", 3)
    assert result.changed == 0
    assert result.frame["parsed_letter"].to_list() == [None, "B"]
    assert result.frame["prediction"].to_list() == [unparsable_guess("I cannot tell.", "ABCD", 3), "B"]


def test_rescore_is_idempotent() -> None:
    first = rescore_mcq(stored_frame([r for r, _ in STALE], [p for _, p in STALE]), "random", 1)
    second = rescore_mcq(first.frame, "random", 1)
    assert second.changed == 0
    assert second.frame.equals(first.frame)


def test_rescore_of_an_empty_table() -> None:
    result = rescore_mcq(stored_frame([], []), "wrong", 0)
    assert result.changed == 0
    assert result.frame.height == 0
    assert result.frame.schema == stored_frame([], []).schema


@pytest.mark.parametrize("column", RESCORE_INPUT_COLUMNS)
def test_rescore_names_a_missing_column(column: str) -> None:
    frame = stored_frame(["A"], ["A"]).drop(column)
    with pytest.raises(ResultsError, match=column):
        rescore_mcq(frame, "wrong", 0)


def test_rescore_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy"):
        rescore_mcq(stored_frame(["A"], ["A"]), "skip", 0)  # type: ignore[arg-type]
