"""What the transformers and vLLM backends share: a loaded model's identity, its batching settings, and the
multiple-choice loops (:func:`mill.backends.llm.generation.answer_mcq` by generation,
:func:`mill.backends.llm.letters.answer_by_letters` by letter likelihood); they differ only in ``generate``
and ``next_token_logprobs``."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mill.backends.llm.generation import answer_mcq
from mill.backends.llm.letters import FloatArray, answer_by_letters
from mill.core.backend import ModelInfo, RunContext
from mill.core.kinds.generative_mcq import McqBatchResult, McqTask
from mill.core.kinds.likelihood_mcq import LikelihoodMcqBatchResult, LikelihoodMcqTask
from mill.core.sample import SampleSource


class GenerativeBackend(abc.ABC):
    """A loaded vision-language model answering :class:`McqTask` by greedy generation and
    :class:`LikelihoodMcqTask` by next-token log-probabilities, ``batch_size`` requests per call to
    :meth:`generate` or :meth:`next_token_logprobs`."""

    #: The name under which :meth:`run_info` reports the batch size (vLLM calls its batches chunks).
    batch_size_name = "batch_size"

    def __init__(self, info: ModelInfo, *, batch_size: int, num_workers: int, context: RunContext) -> None:
        self._info = info
        self._batch_size = batch_size
        self._num_workers = num_workers
        self._context = context

    @property
    def info(self) -> ModelInfo:
        return self._info

    def run_info(self) -> Mapping[str, Any]:
        return {self.batch_size_name: self._batch_size}

    def run_mcq(self, task: McqTask, data: SampleSource) -> Iterator[McqBatchResult]:
        """Answer every sample of ``data``, one result per batch, in the loader's order."""
        return answer_mcq(
            task,
            data,
            self.generate,
            batch_size=self._batch_size,
            num_workers=self._num_workers,
            progress=self._context.progress,
        )

    def run_likelihood_mcq(self, task: LikelihoodMcqTask, data: SampleSource) -> Iterator[LikelihoodMcqBatchResult]:
        """Score every sample's option letters, one result per batch, in the loader's order."""
        return answer_by_letters(
            task,
            data,
            self.chat_processor,
            self.next_token_logprobs,
            batch_size=self._batch_size,
            num_workers=self._num_workers,
            progress=self._context.progress,
        )

    @property
    @abc.abstractmethod
    def chat_processor(self) -> Any:
        """The model's transformers processor: its chat template renders prompts, its tokenizer spells letters."""

    @abc.abstractmethod
    def next_token_logprobs(self, images: Sequence[Any], texts: list[str], token_ids: Sequence[int]) -> FloatArray:
        """Log-probabilities over the whole vocabulary of each of ``token_ids`` as the token after each of the
        rendered ``texts`` (about the image at the same position): ``[len(texts), len(token_ids)]``."""

    @abc.abstractmethod
    def generate(self, images: Sequence[Any], prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers to ``prompts``, each about the image at the same position."""
