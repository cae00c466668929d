"""Generative multiple choice: the true class and seeded distractors shown as lettered options; the model
writes an answer and the letter is parsed from it (:mod:`mill.core.mcq`).

The backend answers with the prompt it sent and the text it generated per sample; the scorer parses and
grades, so a parser change never needs the model again. This module is the whole kind: its variant and task,
the grading of an answer under the variant's :class:`UnparsedPolicy`, re-grading stored results
(:func:`rescore_mcq`, what ``mill rescore`` runs for it) and the statistics ``mill report`` shows of its runs.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl
from attrs import field, frozen

from mill.core.analysis import binomial_accuracy
from mill.core.backend import Backend
from mill.core.errors import ResultsError
from mill.core.mcq import PARSER_VERSION, McqQuestion, make_question_fn, option_letters, parse_answer, question_problems
from mill.core.metrics import MetricValue, accuracy_with_stderr
from mill.core.sample import SampleSource
from mill.core.spec import Spec
from mill.core.task_kind import SAMPLE_COLUMNS, Regraded, Rescorer, Scored, TableMark

NAME = "generative_mcq"
MAX_OPTIONS = 26


class UnparsedPolicy(str, enum.Enum):
    """What an answer that names no option counts as: always wrong, or a seeded random letter (the variant's
    ``unparsed`` key)."""

    WRONG = "wrong"
    RANDOM = "random"


@frozen
class McqVariant:
    """``[variants.X]`` with ``kind = "generative_mcq"``."""

    kind: str
    metric: str
    n_options: int
    prompt: str
    max_new_tokens: int
    unparsed: UnparsedPolicy = UnparsedPolicy.WRONG


@frozen
class McqTask:
    """Answer each image's multiple-choice question by generation.

    ``question`` renders the question for a sample from its key and gold class; it is pure
    and seeded, so the same sample gets the same question in every backend and process.
    """

    benchmark: str
    variant: str
    classnames: tuple[str, ...]
    max_new_tokens: int
    question: Callable[[str, int], McqQuestion] = field(eq=False)


@frozen
class McqBatchResult:
    """Generated text per sample, aligned with ``keys``; ``prompts`` are the texts sent."""

    keys: Sequence[str]
    shards: Sequence[str]
    golds: Sequence[int]
    prompts: Sequence[str]
    responses: Sequence[str]

    def frame(self) -> pl.DataFrame:
        """The batch as raw chunk columns."""
        columns = {
            "key": self.keys,
            "shard": self.shards,
            "gold": self.golds,
            "prompt": self.prompts,
            "response": self.responses,
        }
        return pl.DataFrame(columns, schema={**SAMPLE_COLUMNS, **RAW_SCHEMA})


@runtime_checkable
class McqBackend(Backend, Protocol):
    """A loaded model that answers multiple-choice questions by generation."""

    def run_mcq(self, task: McqTask, data: SampleSource) -> Iterator[McqBatchResult]: ...


RAW_SCHEMA: dict[str, Any] = {"prompt": pl.String, "response": pl.String}

OUTPUT_SCHEMA: dict[str, Any] = {
    **SAMPLE_COLUMNS,
    "gold_letter": pl.String,
    "options": pl.List(pl.String),
    "option_indices": pl.List(pl.Int64),
    "prompt": pl.String,
    "response": pl.String,
    "parsed_letter": pl.String,
    "prediction": pl.String,
    "correct": pl.Boolean,
}


# --- Grading ---------------------------------------------------------------------------------------


@frozen
class McqScore:
    """How one response was graded.

    ``parsed_letter`` is what the response chose (None if nothing); ``prediction`` is the letter
    graded, which under the ``random`` policy is a seeded guess when nothing was parsed.
    """

    parsed_letter: str | None
    prediction: str | None
    correct: bool


def unparsable_guess(response: str, letters: Sequence[str], seed: int) -> str:
    """The letter the ``random`` policy assigns to an unparsable ``response``.

    Seeded by ``"{seed}|parse_multi_choice|{response}"`` so the guess is the same in every run
    with this seed, and agrees with the published protocol.
    """
    return random.Random(f"{seed}|parse_multi_choice|{response}").choice(list(letters))


def grade_answer(
    response: str,
    option_names: Sequence[str],
    letters: Sequence[str],
    gold_letter: str,
    policy: UnparsedPolicy,
    seed: int,
) -> McqScore:
    """Grade ``response`` to a question whose options ``letters`` are named ``option_names``.

    Under policy ``"wrong"`` an unparsable response has no prediction and is wrong; under
    ``"random"`` it is graded on :func:`unparsable_guess`, and may be right by chance.

    Raises:
        ValueError: for an unknown policy, or option names that do not match the letters.
    """
    if policy not in (UnparsedPolicy.WRONG, UnparsedPolicy.RANDOM):
        raise ValueError(f"unknown unparsed policy {policy!r}; expected 'wrong' or 'random'")
    parsed = parse_answer(response, option_names, letters)
    prediction = parsed
    if parsed is None and policy == UnparsedPolicy.RANDOM:
        prediction = unparsable_guess(response, letters, seed)
    return McqScore(parsed_letter=parsed, prediction=prediction, correct=prediction == gold_letter)


def score_response(
    response: str,
    question: McqQuestion,
    option_names: Sequence[str],
    policy: UnparsedPolicy,
    seed: int,
) -> McqScore:
    """Grade ``response`` to ``question``, whose options are named ``option_names`` in letter order.

    As :func:`grade_answer`, with the letters and gold letter taken from ``question``.

    Raises:
        ValueError: for an unknown policy, or option names that do not match the letters.
    """
    return grade_answer(response, option_names, question.letters, question.gold_letter, policy, seed)


def score(task: McqTask, variant: McqVariant, raw: pl.DataFrame, seed: int) -> Scored:
    """Parsed and graded letters per sample; metrics ``{variant.metric}`` and ``unparsed_rate``."""
    records: list[dict[str, Any]] = []
    for key, gold, response in zip(raw["key"], raw["gold"], raw["response"], strict=True):
        question = task.question(key, gold)
        names = [task.classnames[i] for i in question.option_indices]
        graded = score_response(response, question, names, variant.unparsed, seed)
        records.append(
            {
                "gold_letter": question.gold_letter,
                "options": names,
                "option_indices": list(question.option_indices),
                "parsed_letter": graded.parsed_letter,
                "prediction": graded.prediction,
                "correct": graded.correct,
            }
        )
    graded_columns = pl.DataFrame(records, schema={k: OUTPUT_SCHEMA[k] for k in records[0]} if records else None)
    frame = pl.concat([raw.select("key", "shard", "gold", "prompt", "response"), graded_columns], how="horizontal")
    frame = frame.select(list(OUTPUT_SCHEMA)).cast(pl.Schema(OUTPUT_SCHEMA))
    return Scored(frame, metrics(frame, variant.metric, seed))


def metrics(frame: pl.DataFrame, metric: str, seed: int) -> dict[str, MetricValue]:
    """``metric`` (accuracy) and ``unparsed_rate`` of a per-sample frame (:data:`OUTPUT_SCHEMA`)."""
    return {
        metric: accuracy_with_stderr(frame["correct"].to_numpy(), seed),
        "unparsed_rate": accuracy_with_stderr(np.asarray(frame["parsed_letter"].is_null().to_numpy()), seed),
    }


# --- Re-grading stored results ----------------------------------------------------------------------

RESCORE_INPUT_COLUMNS = ("key", "gold_letter", "options", "response", "parsed_letter")
"""The per-sample MCQ columns a re-score reads; it rewrites ``parsed_letter``, ``prediction`` and
``correct`` (adding the last two if absent)."""


@frozen
class Rescored:
    """A re-scored per-sample frame and how many answers' parsed letter changed.

    ``changed`` counts rows whose ``parsed_letter`` differs from the stored one (a letter becoming
    None, or None becoming a letter, counts). Under the ``random`` policy a prediction may also
    change without the parsed letter changing only if the stored frame was scored with another seed.
    """

    frame: pl.DataFrame
    changed: int


def rescore_mcq(frame: pl.DataFrame, policy: UnparsedPolicy, seed: int) -> Rescored:
    """Re-parse and re-grade every stored response of ``frame``, a per-sample MCQ table.

    Each row's letters are ``A``, ``B``, ... for its ``options`` (option names in letter order),
    graded against ``gold_letter`` with ``policy`` and ``seed`` exactly as at evaluation time. The
    columns ``parsed_letter``, ``prediction`` and ``correct`` are replaced in place; every other
    column, the row order and the column order are kept. A null response counts as empty.

    Raises:
        ResultsError: if ``frame`` lacks one of :data:`RESCORE_INPUT_COLUMNS`.
        ValueError: for an unknown policy.
    """
    missing = [column for column in RESCORE_INPUT_COLUMNS if column not in frame.columns]
    if missing:
        raise ResultsError(
            f"cannot re-score a per-sample table without the column(s) {', '.join(missing)} "
            f"(it has {', '.join(frame.columns) or 'none'}); re-run the evaluation to rebuild it"
        )
    scores = [
        grade_answer(response or "", options, option_letters(len(options)), gold, policy, seed)
        for response, options, gold in zip(
            frame["response"].to_list(), frame["options"].to_list(), frame["gold_letter"].to_list(), strict=True
        )
    ]
    rescored = frame.with_columns(
        pl.Series("parsed_letter", [score.parsed_letter for score in scores], dtype=pl.String),
        pl.Series("prediction", [score.prediction for score in scores], dtype=pl.String),
        pl.Series("correct", [score.correct for score in scores], dtype=pl.Boolean),
    )
    changed = int(frame["parsed_letter"].cast(pl.String).ne_missing(rescored["parsed_letter"]).sum())
    return Rescored(frame=rescored, changed=changed)


@frozen
class McqRescorer:
    """Parses stored responses again with the current letter parser (:data:`mill.core.mcq.PARSER_VERSION`)."""

    version: int = PARSER_VERSION

    def rescore(self, variant: McqVariant, frame: pl.DataFrame, seed: int) -> Regraded:
        rescored = rescore_mcq(frame, variant.unparsed, seed)
        return Regraded(Scored(rescored.frame, metrics(rescored.frame, variant.metric, seed)), rescored.changed)


# 10-way and 1000-way accuracies are not one scale, so result tables mark the multiple-choice ones.
MARK = TableMark(
    "†",
    "multiple-choice variant (a choice among a few options, not on the scale of a classification "
    "accuracy over all classes)",
)


@frozen
class GenerativeMcqKind:
    """The ``generative_mcq`` task kind."""

    name: str = NAME
    variant_type: type[McqVariant] = McqVariant
    backend_protocol: type[Any] = McqBackend
    raw_schema: Mapping[str, Any] = RAW_SCHEMA
    mark: TableMark | None = MARK
    rescorer: Rescorer | None = McqRescorer()

    def check_variant(self, variant: McqVariant, n_classes: int) -> Sequence[tuple[str, str]]:
        problems = question_problems(variant.n_options, variant.prompt, n_classes, MAX_OPTIONS)
        if variant.max_new_tokens < 1:
            problems.append(("max_new_tokens", "expected a positive integer"))
        return problems

    def settings(self, variant: McqVariant) -> Mapping[str, str]:
        return {"max_new_tokens": str(variant.max_new_tokens)}

    def build_task(self, spec: Spec, variant_name: str, variant: McqVariant, seed: int) -> McqTask:
        question = make_question_fn(seed, variant_name, spec.classnames, variant.n_options, variant.prompt)
        return McqTask(spec.name, variant_name, spec.classnames, variant.max_new_tokens, question)

    def answer(self, backend: McqBackend, task: McqTask, data: SampleSource) -> Iterator[pl.DataFrame]:
        for batch in backend.run_mcq(task, data):
            yield batch.frame()

    def score(self, task: McqTask, variant: McqVariant, raw: pl.DataFrame, seed: int) -> Scored:
        return score(task, variant, raw, seed)

    def metrics(self, frame: pl.DataFrame, metric: str, seed: int) -> Mapping[str, MetricValue]:
        return metrics(frame, metric, seed)


kind = GenerativeMcqKind()


# --- Analysis (mill report, or anyone reading the parquet files) ---------------------------------------

#: The "letter" under which replies naming no option are counted in :func:`chosen_letters`.
UNPARSED = "unparsed"


def mcq_summary(frame: pl.DataFrame) -> pl.DataFrame:
    """One row: ``n``, ``accuracy``, ``stderr`` (binomial), ``n_unparsed``, ``unparsed_rate`` of an MCQ frame."""
    unparsed = pl.col("parsed_letter").is_null()
    return frame.select(
        pl.len().alias("n"),
        pl.col("correct").cast(pl.Float64).mean().alias("accuracy"),
        (pl.col("correct").cast(pl.Float64).mean() * (1 - pl.col("correct").cast(pl.Float64).mean()) / pl.len())
        .sqrt()
        .alias("stderr"),
        unparsed.sum().alias("n_unparsed"),
        unparsed.cast(pl.Float64).mean().alias("unparsed_rate"),
    )


def unparsed_responses(frame: pl.DataFrame, n: int = 10) -> pl.DataFrame:
    """Up to ``n`` replies that named no option, in key order: ``key``, ``gold_letter``, ``response``."""
    return frame.filter(pl.col("parsed_letter").is_null()).sort("key").head(n).select("key", "gold_letter", "response")


def accuracy_by_gold_position(frame: pl.DataFrame) -> pl.DataFrame:
    """Accuracy by the gold option's letter, in letter order: ``gold_letter``, ``n``, ``n_correct``,
    ``accuracy``, ``stderr``. A model with a position bias scores unevenly here."""
    return frame.group_by("gold_letter").agg(binomial_accuracy(pl.col("correct"))).sort("gold_letter")


def chosen_letters(frame: pl.DataFrame) -> pl.DataFrame:
    """How often each letter was chosen (the parsed letter; :data:`UNPARSED` for replies naming none), beside
    how often it was the gold one: ``letter``, ``chosen``, ``gold``, ``chosen_share``, ``gold_share``.
    Every letter of the widest question appears, in order, then :data:`UNPARSED`."""
    width = int(frame.select(pl.col("options").list.len().max()).item() or 0)
    order = [*option_letters(width), UNPARSED]
    chosen = frame.group_by(pl.col("parsed_letter").fill_null(UNPARSED).alias("letter")).agg(pl.len().alias("chosen"))
    gold = frame.group_by(pl.col("gold_letter").alias("letter")).agg(pl.len().alias("gold"))
    return (
        pl.DataFrame({"letter": order, "position": range(len(order))})
        .join(chosen, on="letter", how="left")
        .join(gold, on="letter", how="left")
        .with_columns(pl.col("chosen", "gold").fill_null(0).cast(pl.Int64))
        .with_columns(
            (pl.col("chosen") / frame.height).alias("chosen_share"),
            (pl.col("gold") / frame.height).alias("gold_share"),
        )
        .sort("position")
        .drop("position")
    )
