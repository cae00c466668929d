"""The bootstrap standard error written the slow, obvious way: the reference the vectorised ``*_with_stderr``
functions of :mod:`mill.core.metrics` are tested against."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from mill.core.metrics import N_RESAMPLES, IndexArray, resample_chunks

#: A metric computed on the samples at the given (repeated) indices.
Statistic = Callable[[IndexArray], float]


def bootstrap_stderr(statistic: Statistic, n: int, seed: int, n_resamples: int = N_RESAMPLES) -> float:
    """Bootstrap standard error of ``statistic`` over ``n`` samples.

    ``statistic`` receives the indices of one resample (drawn with replacement, length ``n``) and
    returns the metric on those samples. The error is the standard deviation (ddof=1) over ``n_resamples``
    resamples drawn as :func:`mill.core.metrics.resample_chunks` draws them, calling ``statistic`` once per
    resample.

    Raises:
        ValueError: if ``n`` < 1 or ``n_resamples`` < 2.
    """
    values = [float(statistic(row)) for chunk in resample_chunks(n, seed, n_resamples) for row in chunk]
    return statistics.stdev(values)
