"""The loop both backends share: samples in, one question per sample, answers out per batch.

Keeping it in one place means transformers and vLLM ask the same questions in the same order
and report progress the same way; they differ only in how a batch of requests is answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mill.core.kinds.generative_mcq import McqBatchResult, McqTask
from mill.core.mcq import McqQuestion
from mill.core.progress import Progress
from mill.core.sample import SampleBatch, SampleSource

# (images, prompts, max_new_tokens) -> one response per prompt, in order.
Answerer = Callable[[Sequence[Any], list[str], int], list[str]]


def questioned_batches(
    question: Callable[[str, int], McqQuestion],
    data: SampleSource,
    *,
    batch_size: int,
    num_workers: int,
    progress: Progress,
) -> Iterator[tuple[SampleBatch, list[str]]]:
    """Every batch of ``data`` with the prompt ``question`` asks about each of its samples.

    Images come as the loader decodes them (RGB PIL images, no transform). The ``evaluating`` progress
    phase counts samples as each batch is handed back, and is closed even when iteration stops early.
    """
    progress.start("evaluating", total=len(data))
    try:
        for batch in data.batches(batch_size=batch_size, num_workers=num_workers):
            yield batch, [question(key, gold).prompt for key, gold in zip(batch.keys, batch.labels, strict=True)]
            progress.advance(len(batch.keys))
    finally:
        progress.finish()


def answer_mcq(
    task: McqTask,
    data: SampleSource,
    answer: Answerer,
    *,
    batch_size: int,
    num_workers: int,
    progress: Progress,
) -> Iterator[McqBatchResult]:
    """Ask ``task``'s question about every sample of ``data``, ``batch_size`` samples per call to ``answer``
    (see :func:`questioned_batches`)."""
    for batch, prompts in questioned_batches(
        task.question, data, batch_size=batch_size, num_workers=num_workers, progress=progress
    ):
        responses = answer(batch.images, prompts, task.max_new_tokens)
        if len(responses) != len(prompts):
            raise RuntimeError(f"backend returned {len(responses)} responses for {len(prompts)} prompts")
        yield McqBatchResult(
            keys=list(batch.keys),
            shards=list(batch.shards),
            golds=list(batch.labels),
            prompts=prompts,
            responses=responses,
        )
