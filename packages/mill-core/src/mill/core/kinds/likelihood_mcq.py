"""Letter-likelihood multiple choice: the question of :mod:`mill.core.kinds.generative_mcq`, answered by the
model's next-token probabilities over the option letters instead of by generated text.

The backend renders the question as the generative kind does, runs one forward pass per image up to the
chat template's generation prompt, and reports for each option letter its log-probability over the whole
vocabulary (the letter's tokens with and without a leading space combined), plus the probability mass all
letters hold together. The letter with the highest log-probability is the model's choice: there is nothing
to parse, so nothing is unparsed, and a model that would ramble still gets a choice. ``letter_mass`` says how
well the model follows the answer format: near 1 when it would have answered with a letter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl
from attrs import field, frozen

from mill.core.backend import Backend
from mill.core.errors import NonFiniteError
from mill.core.kinds import generative_mcq
from mill.core.mcq import McqQuestion, make_question_fn, option_letters, question_problems
from mill.core.metrics import MetricValue, accuracy_with_stderr, mean_with_stderr
from mill.core.sample import SampleSource
from mill.core.spec import Spec
from mill.core.task_kind import SAMPLE_COLUMNS, Rescorer, Scored, TableMark

NAME = "likelihood_mcq"
#: Letters A to J: tokenizers encode each of these alone as one token, with or without a leading space.
MAX_OPTIONS = 10


@frozen
class LikelihoodMcqVariant:
    """``[variants.X]`` with ``kind = "likelihood_mcq"``: the generative variant's question, nothing to generate."""

    kind: str
    metric: str
    n_options: int
    prompt: str


@frozen
class LikelihoodMcqTask:
    """Score each image's multiple-choice question by the probability of each option letter.

    ``question`` is the generative kind's (pure and seeded); ``letters`` are the option letters whose
    log-probabilities a backend reports, in order.
    """

    benchmark: str
    variant: str
    classnames: tuple[str, ...]
    letters: tuple[str, ...]
    question: Callable[[str, int], McqQuestion] = field(eq=False)


@frozen
class LikelihoodMcqBatchResult:
    """Per sample, aligned with ``keys``: the text sent (``prompts``), the log-probability of each of the
    task's letters over the whole vocabulary (``letter_logprobs``, in letter order), and the probability
    all letters hold together (``letter_mass``)."""

    keys: Sequence[str]
    shards: Sequence[str]
    golds: Sequence[int]
    prompts: Sequence[str]
    letter_logprobs: Sequence[Sequence[float]]
    letter_mass: Sequence[float]

    def frame(self) -> pl.DataFrame:
        """The batch as raw chunk columns."""
        columns = {
            "key": self.keys,
            "shard": self.shards,
            "gold": self.golds,
            "prompt": self.prompts,
            "letter_logprobs": self.letter_logprobs,
            "letter_mass": self.letter_mass,
        }
        return pl.DataFrame(columns, schema={**SAMPLE_COLUMNS, **RAW_SCHEMA})


@runtime_checkable
class LikelihoodMcqBackend(Backend, Protocol):
    """A loaded model that reports its next-token log-probabilities of option letters."""

    def run_likelihood_mcq(self, task: LikelihoodMcqTask, data: SampleSource) -> Iterator[LikelihoodMcqBatchResult]: ...


RAW_SCHEMA: dict[str, Any] = {
    "prompt": pl.String,
    "letter_logprobs": pl.List(pl.Float64),
    "letter_mass": pl.Float64,
}

# The question's columns as the generative kind writes them, so the two files line up sample by sample.
_QUESTION_COLUMNS = ("gold_letter", "options", "option_indices", "prompt")

OUTPUT_SCHEMA: dict[str, Any] = {
    **SAMPLE_COLUMNS,
    **{name: generative_mcq.OUTPUT_SCHEMA[name] for name in _QUESTION_COLUMNS},
    "letter_logprobs": pl.List(pl.Float64),
    "letter_mass": pl.Float64,
    "prediction": pl.String,
    "correct": pl.Boolean,
}


def score(task: LikelihoodMcqTask, variant: LikelihoodMcqVariant, raw: pl.DataFrame, seed: int) -> Scored:
    """The most likely letter per sample, graded; metrics ``{variant.metric}`` and ``letter_mass`` (its mean).

    A tie between letters goes to the earlier letter, as ``argmax`` breaks it.

    Raises:
        ValueError: when a sample holds a log-probability per letter for other than the task's letters.
        NonFiniteError: naming the samples whose letter scores are NaN or infinite.
    """
    n_letters = len(task.letters)
    logprobs = np.asarray(raw["letter_logprobs"].to_list(), dtype=np.float64).reshape(len(raw), -1)
    if logprobs.shape[1] != n_letters:
        raise ValueError(f"samples hold {logprobs.shape[1]} letter log-probabilities for {n_letters} letters")
    broken = ~np.isfinite(logprobs).all(axis=1) | ~np.isfinite(raw["letter_mass"].to_numpy())
    if broken.any():
        keys = raw["key"].filter(pl.Series(broken)).to_list()
        shown = ", ".join(repr(key) for key in keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
        # A float16 overflow, say: the likeliest letter of a NaN row would be a silent, wrong answer.
        raise NonFiniteError(
            f"non-finite (NaN or inf) letter scores for {len(keys)} of {len(raw)} samples: {shown}; run the model "
            "in a wider dtype (dtype=bfloat16 or float32), or check these images"
        )
    questions = [task.question(key, gold) for key, gold in zip(raw["key"], raw["gold"], strict=True)]
    letters = np.array(task.letters, dtype=object)
    predictions = letters[logprobs.argmax(axis=1)].tolist()
    gold_letters = [question.gold_letter for question in questions]
    correct = np.array([p == g for p, g in zip(predictions, gold_letters, strict=True)], dtype=bool)
    frame = pl.DataFrame(
        {
            "key": raw["key"],
            "shard": raw["shard"],
            "gold": raw["gold"],
            "gold_letter": gold_letters,
            "options": [[task.classnames[i] for i in q.option_indices] for q in questions],
            "option_indices": [list(q.option_indices) for q in questions],
            "prompt": raw["prompt"],
            "letter_logprobs": raw["letter_logprobs"],
            "letter_mass": raw["letter_mass"],
            "prediction": predictions,
            "correct": correct,
        },
        schema=OUTPUT_SCHEMA,
    )
    return Scored(frame, metrics(frame, variant.metric, seed))


def metrics(frame: pl.DataFrame, metric: str, seed: int) -> dict[str, MetricValue]:
    """``metric`` (accuracy) and ``letter_mass`` (the letters' mean share of the vocabulary) of a per-sample frame."""
    return {
        metric: accuracy_with_stderr(frame["correct"].to_numpy(), seed),
        "letter_mass": mean_with_stderr(frame["letter_mass"].to_numpy(), seed),
    }


@frozen
class LikelihoodMcqKind:
    """The ``likelihood_mcq`` task kind."""

    name: str = NAME
    variant_type: type[LikelihoodMcqVariant] = LikelihoodMcqVariant
    backend_protocol: type[Any] = LikelihoodMcqBackend
    raw_schema: Mapping[str, Any] = RAW_SCHEMA
    # Still a choice among a few options: marked like the generative kind, under the same legend.
    mark: TableMark | None = generative_mcq.MARK
    # The letter is read off the model's log-probabilities, not parsed: nothing to re-grade.
    rescorer: Rescorer | None = None

    def check_variant(self, variant: LikelihoodMcqVariant, n_classes: int) -> Sequence[tuple[str, str]]:
        return question_problems(variant.n_options, variant.prompt, n_classes, MAX_OPTIONS)

    def settings(self, variant: LikelihoodMcqVariant) -> Mapping[str, str]:
        del variant  # the question is part of the spec; nothing else changes the answer
        return {}

    def build_task(self, spec: Spec, variant_name: str, variant: LikelihoodMcqVariant, seed: int) -> LikelihoodMcqTask:
        question = make_question_fn(seed, variant_name, spec.classnames, variant.n_options, variant.prompt)
        return LikelihoodMcqTask(spec.name, variant_name, spec.classnames, option_letters(variant.n_options), question)

    def answer(
        self, backend: LikelihoodMcqBackend, task: LikelihoodMcqTask, data: SampleSource
    ) -> Iterator[pl.DataFrame]:
        for batch in backend.run_likelihood_mcq(task, data):
            yield batch.frame()

    def score(self, task: LikelihoodMcqTask, variant: LikelihoodMcqVariant, raw: pl.DataFrame, seed: int) -> Scored:
        return score(task, variant, raw, seed)

    def metrics(self, frame: pl.DataFrame, metric: str, seed: int) -> Mapping[str, MetricValue]:
        return metrics(frame, metric, seed)


kind = LikelihoodMcqKind()
