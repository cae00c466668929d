"""What a backend is asked to do for one variant, and what it answers.

A task is built by the runner from a spec variant; it holds everything a backend needs and
nothing about files or CLI flags. Results are per batch, so the runner can commit them as they come.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from attrs import field, frozen


class VariantKind(str, enum.Enum):
    """How a variant poses its samples to a model."""

    ZERO_SHOT = "zero_shot"
    GENERATIVE_MCQ = "generative_mcq"


@frozen
class ZeroShotTask:
    """Score every image against ``classnames`` with a prompt-ensemble classifier.

    ``templates`` hold a ``{c}`` placeholder for the class name.
    """

    benchmark: str
    variant: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    top_k: int = 5


@frozen
class ZeroShotBatchResult:
    """Top-k class indices per sample, best first, aligned with ``keys``."""

    keys: Sequence[str]
    shards: Sequence[str]
    golds: Sequence[int]
    topk: Sequence[Sequence[int]]


@frozen
class McqQuestion:
    """One rendered multiple-choice question for a sample."""

    prompt: str
    option_indices: tuple[int, ...]
    letters: tuple[str, ...]
    gold_letter: str


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
