"""Running out of accelerator memory: a batch that does not fit is retried at half its size, and the run
goes on at that size.

Backends that batch on a device they do not manage themselves (clip, hf; vLLM plans its own memory) keep
an :class:`AdaptiveBatchSize`. Its state is part of the backend's ``run_info``, which the engine
records in the run's directory at every commit and hands back to a resumed run
(:class:`~mill.core.backend.ResumableBackend`), so a run cut after falling back starts at the smaller size
instead of running out of memory again. The batch size is a speed setting, outside the run's identity:
splitting a batch changes no sample's answer (up to floating-point reassociation).

Which batch size computed each sample is kept per sample: :meth:`AdaptiveBatchSize.map` notes it by key, the
engine takes it for every answered frame (:class:`~mill.core.backend.BatchSizedBackend`) into the
:data:`BATCH_SIZE_COLUMN` of the committed chunks and the per-sample file, and the record's
``samples_by_batch_size`` counts that column (:func:`counts_by_batch_size`).

The error is recognised by name, so mill-core needs no torch.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import polars as pl

from mill.core.errors import OutOfMemoryError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``run_info`` keys: the size batches run at now and each fall-back (``{"from": 64, "to": 32}``), which the
#: backend gives; and how many of the run's samples were computed in batches of each size (``{"64": 1024, "17":
#: 17}``: under bf16 autocast a sample's result may depend on its batch's size, see docs/outputs.md), which the
#: engine counts from the per-sample column when it records the run.
BATCH_SIZE_KEY = "batch_size"
FALLBACKS_KEY = "out_of_memory_fallbacks"
SAMPLES_BY_BATCH_SIZE_KEY = "samples_by_batch_size"

#: The per-sample column (committed chunks and per-sample file) naming the size of the batch that computed the
#: sample; null for a backend that does not batch through :class:`AdaptiveBatchSize` (vLLM, a served model).
BATCH_SIZE_COLUMN = "batch_size"
BATCH_SIZE_SCHEMA: dict[str, Any] = {BATCH_SIZE_COLUMN: pl.Int64}


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an accelerator running out of memory: ``torch.OutOfMemoryError`` (also
    ``torch.cuda.OutOfMemoryError``), or the ``RuntimeError`` other devices and older releases raise."""
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class AdaptiveBatchSize:
    """The batch size a backend computes at: the requested one until a batch runs out of memory, then half.

    ``release`` frees what the failed attempt left cached on the device (``torch.cuda.empty_cache``).
    """

    def __init__(self, requested: int, *, release: Callable[[], None] = lambda: None, name: str = "") -> None:
        if requested < 1:
            raise ValueError(f"batch size {requested} is not positive")
        self.size = requested
        self.fallbacks: list[dict[str, int]] = []
        self._release = release
        self._name = name or "batch"
        # Items computed by map and not yet taken: the size of the slice each was computed in, by key when map
        # was told the keys, else in the order computed.
        self._size_by_key: dict[str, int] = {}
        self._unkeyed_sizes: deque[int] = deque()

    def take_sizes(self, keys: Sequence[str]) -> list[int | None]:
        """The size of the slice that computed each of ``keys``, in order; each is forgotten once taken, so the
        notes never outgrow the batches in flight.

        A key :meth:`map` was told of gets its own; any other takes the oldest size noted without a key (a
        backend that answers each batch in one :meth:`map` call, in order, before the next); None once none is
        left (the answer did not come through :meth:`map`).
        """
        return [self._size_by_key.pop(key) if key in self._size_by_key else self._take_unkeyed() for key in keys]

    def _take_unkeyed(self) -> int | None:
        return self._unkeyed_sizes.popleft() if self._unkeyed_sizes else None

    def run_info(self) -> dict[str, Any]:
        """What the manifest records, and what :meth:`resume` reads back."""
        return {BATCH_SIZE_KEY: self.size, FALLBACKS_KEY: [dict(f) for f in self.fallbacks]}

    def resume(self, previous: Mapping[str, Any]) -> None:
        """Start where an earlier process of the same run left off: at its smaller size, with its fall-backs (the
        sizes its committed samples were computed at are in their chunks' :data:`BATCH_SIZE_COLUMN`)."""
        size = previous.get(BATCH_SIZE_KEY)
        fallbacks = previous.get(FALLBACKS_KEY)
        if not isinstance(size, int) or not isinstance(fallbacks, list) or not fallbacks:
            return  # it never fell back: the requested size (perhaps changed since) stands
        if 1 <= size < self.size:
            log.warning("resuming at %s size %d, where the interrupted run fell back to", self._name, size)
            self.size = size
        self.fallbacks = [dict(f) for f in fallbacks if isinstance(f, dict)] + self.fallbacks

    def map(
        self,
        n: int,
        compute: Callable[[int, int], T],
        *,
        where: Callable[[], str] = str,
        keys: Sequence[str] = (),
    ) -> list[T]:
        """``compute(start, stop)`` over ``[0, n)`` in slices of at most :attr:`size` items, in order.

        A slice that runs out of memory is computed again at half the size (and the size stays halved), so
        every item is computed by exactly one call that returned. Each item is noted with the size of the slice
        that computed it (:meth:`take_sizes`), under its sample's key when ``keys`` (``n`` of them) are given.

        Raises:
            OutOfMemoryError: a single item does not fit; ``where()`` names what was being computed.
        """
        results: list[T] = []
        start = 0
        while start < n:
            stop = min(n, start + self.size)
            try:
                results.append(compute(start, stop))
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                failed = stop - start
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
            else:
                if keys:
                    self._size_by_key.update(dict.fromkeys(keys[start:stop], stop - start))
                else:
                    self._unkeyed_sizes.extend([stop - start] * (stop - start))
                start = stop
                continue
            # Outside the except block: the traceback (and the tensors its frames hold) is gone by now.
            self._release()
            if failed == 1:
                raise OutOfMemoryError(
                    f"out of memory computing one sample ({where()}): {message}; use a smaller model or a "
                    "lower precision (fp16, amp_bf16), or free the device of other processes"
                )
            self.size = max(1, failed // 2)
            self.fallbacks.append({"from": failed, "to": self.size})
            log.warning("out of memory at %s size %d; retrying at %d", self._name, failed, self.size)
        return results


def counts_by_batch_size(frame: pl.DataFrame) -> dict[int, int] | None:
    """How many samples of ``frame`` (raw answers or a per-sample file) were computed in batches of each size,
    by its :data:`BATCH_SIZE_COLUMN`; None when the column is absent or wholly null (a file written before Mill
    kept it, a backend that does not say)."""
    if BATCH_SIZE_COLUMN not in frame.columns or frame[BATCH_SIZE_COLUMN].null_count() == frame.height:
        return None
    counts = frame[BATCH_SIZE_COLUMN].drop_nulls().value_counts()
    return {int(size): int(n) for size, n in counts.iter_rows()}


def keep_batch_sizes(frame: pl.DataFrame, source: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (one row per key) with the :data:`BATCH_SIZE_COLUMN` of ``source``'s rows of the same keys,
    last; ``frame`` unchanged when ``source`` has no such column (files written before Mill kept it)."""
    if BATCH_SIZE_COLUMN not in source.columns:
        return frame
    sizes = source.select("key", BATCH_SIZE_COLUMN)
    return frame.drop(BATCH_SIZE_COLUMN, strict=False).join(sizes, on="key", how="left", maintain_order="left")
