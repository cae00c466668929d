"""Running out of accelerator memory: a batch that does not fit is retried at half its size, and the run
goes on at that size.

Backends that batch on a device they do not manage themselves (clip, hf; vLLM plans its own memory) keep
an :class:`AdaptiveBatchSize`. Its state is part of the backend's ``run_info``, which the engine
records in the run's directory at every commit and hands back to a resumed run
(:class:`~mill.core.backend.ResumableBackend`), so a run cut after falling back starts at the smaller size
instead of running out of memory again. The batch size is a speed setting, outside the run's identity:
splitting a batch changes no sample's answer (up to floating-point reassociation).

Pure Python: the error is recognised by name, so mill-core needs no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mill.core.errors import OutOfMemoryError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``run_info`` keys: the size batches run at now, each fall-back (``{"from": 64, "to": 32}``), and how many
#: samples were computed in batches of each size (``{"64": 1024, "17": 17}``: under bf16 autocast a sample's
#: result may depend on its batch's size, see docs/outputs.md).
BATCH_SIZE_KEY = "batch_size"
FALLBACKS_KEY = "out_of_memory_fallbacks"
SAMPLES_BY_BATCH_SIZE_KEY = "samples_by_batch_size"


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
        #: Samples computed per batch size actually run (a last, partial batch counts under its own size).
        self.samples_by_size: dict[int, int] = {}
        self._release = release
        self._name = name or "batch"

    def run_info(self) -> dict[str, Any]:
        """What the manifest records, and what :meth:`resume` reads back."""
        return {
            BATCH_SIZE_KEY: self.size,
            FALLBACKS_KEY: [dict(f) for f in self.fallbacks],
            SAMPLES_BY_BATCH_SIZE_KEY: {str(size): n for size, n in sorted(self.samples_by_size.items(), reverse=True)},
        }

    def resume(self, previous: Mapping[str, Any]) -> None:
        """Start where an earlier process of the same run left off: at its smaller size, with its fall-backs and
        its counts of samples per batch size (those of its committed samples)."""
        counts = previous.get(SAMPLES_BY_BATCH_SIZE_KEY)
        if isinstance(counts, dict):
            for size_text, n in counts.items():
                if str(size_text).isdigit() and isinstance(n, int):
                    self.samples_by_size[int(size_text)] = self.samples_by_size.get(int(size_text), 0) + n
        size = previous.get(BATCH_SIZE_KEY)
        fallbacks = previous.get(FALLBACKS_KEY)
        if not isinstance(size, int) or not isinstance(fallbacks, list) or not fallbacks:
            return  # it never fell back: the requested size (perhaps changed since) stands
        if 1 <= size < self.size:
            log.warning("resuming at %s size %d, where the interrupted run fell back to", self._name, size)
            self.size = size
        self.fallbacks = [dict(f) for f in fallbacks if isinstance(f, dict)] + self.fallbacks

    def map(self, n: int, compute: Callable[[int, int], T], *, where: Callable[[], str] = str) -> list[T]:
        """``compute(start, stop)`` over ``[0, n)`` in slices of at most :attr:`size` items, in order.

        A slice that runs out of memory is computed again at half the size (and the size stays halved), so
        every item is computed by exactly one call that returned.

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
                self.samples_by_size[stop - start] = self.samples_by_size.get(stop - start, 0) + stop - start
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
