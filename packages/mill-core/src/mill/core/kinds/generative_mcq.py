"""Generative multiple choice: the true class and seeded distractors shown as lettered options; the model
writes an answer and the letter is parsed from it (:mod:`mill.core.mcq`).

The backend answers with the prompt it sent and the text it generated per sample; the scorer parses and
grades, so a parser change never needs the model again.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl
from attrs import field, frozen

from mill.core.backend import Backend
from mill.core.mcq import PARSER_VERSION, McqQuestion, make_question_fn, question_problems, score_response
from mill.core.metrics import MetricValue, accuracy_with_stderr
from mill.core.rescore import rescore_mcq
from mill.core.sample import SampleSource
from mill.core.spec import Spec
from mill.core.task_kind import SAMPLE_COLUMNS, Regraded, Rescorer, Scored, TableMark

NAME = "generative_mcq"
MAX_OPTIONS = 26


class UnparsedPolicy(str, enum.Enum):
    """How an answer that names no option is scored."""

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


def score(task: McqTask, variant: McqVariant, raw: pl.DataFrame, seed: int) -> Scored:
    """Parsed and graded letters per sample; metrics ``{variant.metric}`` and ``unparsed_rate``."""
    records: list[dict[str, Any]] = []
    for key, gold, response in zip(raw["key"], raw["gold"], raw["response"], strict=True):
        question = task.question(key, gold)
        names = [task.classnames[i] for i in question.option_indices]
        graded = score_response(response, question, names, variant.unparsed.value, seed)
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


@frozen
class McqRescorer:
    """Parses stored responses again with the current letter parser (:data:`mill.core.mcq.PARSER_VERSION`)."""

    version: int = PARSER_VERSION

    def rescore(self, variant: McqVariant, frame: pl.DataFrame, seed: int) -> Regraded:
        rescored = rescore_mcq(frame, variant.unparsed.value, seed)
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
