"""One finished run's facts, as the aggregate rows carry them, for tests of the results store and tables."""

from __future__ import annotations

from typing import Any

from attrs import evolve

from mill.core.results import RunFacts

#: A full 50,000-sample ImageNet zero-shot run with default settings.
FACTS = RunFacts(
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


def run_facts(**changes: Any) -> RunFacts:
    """:data:`FACTS` with the fields in ``changes`` replaced."""
    return evolve(FACTS, **changes)
