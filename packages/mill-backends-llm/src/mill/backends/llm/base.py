"""What the transformers and vLLM backends share: a loaded model's identity, its batching settings, and the
multiple-choice loop (:func:`mill.backends.llm.generation.answer_mcq`); they differ only in ``generate``."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mill.backends.llm.generation import answer_mcq
from mill.core.backend import ModelInfo, RunContext
from mill.core.kinds.generative_mcq import McqBatchResult, McqTask
from mill.core.sample import SampleSource


class GenerativeBackend(abc.ABC):
    """A loaded vision-language model answering :class:`McqTask` by greedy generation, ``batch_size``
    requests per call to :meth:`generate`."""

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

    @abc.abstractmethod
    def generate(self, images: Sequence[Any], prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers to ``prompts``, each about the image at the same position."""
