"""Shared data for mill-core's tests: one run's facts and zero-shot metrics."""

from __future__ import annotations

import pytest

from mill.core.metrics import MetricValue
from mill.core.results import RunFacts

_FACTS = RunFacts(
    model="ViT-B-32/laion2b_s34b_b79k",
    benchmark="imagenet",
    task_type="zero_shot",
    n_samples=50_000,
    seed=42,
    limit=None,
    settings="precision=amp_bf16",
    default_settings=True,
    run_id="r1",
    incomplete=False,
    n_skipped=0,
    output_file="outputs/x.parquet",
    finished_at="2026-11-29T12:00:00+00:00",
)
_ZERO_SHOT = {
    "acc": MetricValue(0.6656, 0.002),
    "acc5": MetricValue(0.89, 0.001),
    "mean_per_class_recall": MetricValue(0.66, 0.002),
}


@pytest.fixture
def facts() -> RunFacts:
    return _FACTS


@pytest.fixture
def zero_shot() -> dict[str, MetricValue]:
    return dict(_ZERO_SHOT)
