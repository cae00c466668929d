"""Shared data for mill-core's tests: zero-shot metrics to store with the ``facts`` fixture (of the
``mill_testing`` plugin, tests/support/mill-testing)."""

from __future__ import annotations

import pytest

from mill.core.metrics import MetricValue

_ZERO_SHOT = {
    "acc": MetricValue(0.6656, 0.002),
    "acc5": MetricValue(0.89, 0.001),
    "mean_per_class_recall": MetricValue(0.66, 0.002),
}


@pytest.fixture
def zero_shot() -> dict[str, MetricValue]:
    return dict(_ZERO_SHOT)
