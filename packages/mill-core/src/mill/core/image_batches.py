"""How an image backend (clip, the classifiers) walks its data: batches read with its transform, each computed in
slices that fall back to a smaller size when the device runs out of memory (:mod:`mill.core.batch_size`), with one
batch in flight, and samples whose outputs are not finite named.

Pure Python: what is computed (tensors on a device) is the caller's; this module only orders the work, so the
backends share one loop instead of copies of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from mill.core.batch_size import AdaptiveBatchSize
from mill.core.errors import NonFiniteError
from mill.core.kinds.zero_shot import ZeroShotBatchResult
from mill.core.progress import Progress
from mill.core.sample import SampleBatch, SampleSource

A = TypeVar("A")
R = TypeVar("R")


def answer_batches(
    data: SampleSource,
    *,
    batch_size: AdaptiveBatchSize,
    transform: Callable[[Any], Any],
    num_workers: int,
    pin_memory: bool,
    compute: Callable[[Any], A],
    combine: Callable[[list[A]], A],
    collect: Callable[[SampleBatch, A], R],
    progress: Progress,
) -> Iterator[R]:
    """``collect(batch, answer)`` for every batch of ``data``, where ``answer`` is ``combine`` of ``compute`` over
    the batch's images in slices of at most ``batch_size.size`` (each sample's noted with its key:
    :meth:`AdaptiveBatchSize.take_sizes`).

    One batch in flight: batch i+1 is computed (queued on the device) before batch i is collected (which copies its
    answer back and waits for the device), so the accelerator is not idle while the host collects. Progress phase
    "evaluating" covers the whole walk.
    """
    progress.start("evaluating", total=len(data))
    pending: tuple[SampleBatch, A] | None = None
    try:
        for batch in data.batches(
            batch_size=batch_size.size, num_workers=num_workers, transform=transform, pin_memory=pin_memory
        ):
            parts = batch_size.map(
                len(batch.keys),
                lambda start, stop: compute(batch.images[start:stop]),  # noqa: B023
                where=lambda: f"shard {batch.shards[0]}, sample {batch.keys[0]!r}",  # noqa: B023
                keys=batch.keys,
            )
            answer = combine(parts)
            if pending is not None:
                yield collect(*pending)
            pending = (batch, answer)
        if pending is not None:
            yield collect(*pending)
    finally:
        progress.finish()


def check_finite_samples(batch: SampleBatch, finite: Sequence[bool], what: str, fix: str) -> None:
    """Raise when some sample of ``batch`` has a non-finite ``what`` (``finite`` per sample, in batch order).

    Raises:
        NonFiniteError: naming up to ten samples (key and shard) and how many there are, then ``fix``.
    """
    bad = [(key, shard) for key, shard, ok in zip(batch.keys, batch.shards, finite, strict=True) if not ok]
    if not bad:
        return
    shown = ", ".join(f"{key!r} (shard {shard})" for key, shard in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise NonFiniteError(
        f"non-finite (NaN or inf) {what} for {len(bad)} of {len(batch.keys)} samples in a batch: {shown}{more}; {fix}"
    )


def topk_result(
    batch: SampleBatch, topk: list[list[int]], finite: Sequence[bool], *, what: str, fix: str, progress: Progress
) -> ZeroShotBatchResult:
    """A batch's top-k classes per sample as a kind's batch result (zero-shot's columns, which classification
    shares), once every sample's output is known to be finite (:func:`check_finite_samples`); advances
    ``progress``."""
    check_finite_samples(batch, finite, what, fix)
    progress.advance(len(batch.keys))
    return ZeroShotBatchResult(keys=list(batch.keys), shards=list(batch.shards), golds=list(batch.labels), topk=topk)
