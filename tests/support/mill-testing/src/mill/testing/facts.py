"""One finished run's facts, as the aggregate rows carry them, for tests of the results store and tables; a
whole stored run built from a per-sample frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from attrs import evolve

from mill.core.metrics import MetricValue
from mill.core.record import Outcome, Provenance, RunRecord, Settings, Subject
from mill.core.results import RunFacts, run_rows, upsert_aggregate
from mill.core.results_dir import ResultsDir

#: A full 50,000-sample ImageNet zero-shot run with default settings.
#: Zero-shot metrics of a run, to store with :data:`FACTS`.
ZERO_SHOT_METRICS = {
    "acc": MetricValue(0.6656, 0.002),
    "acc5": MetricValue(0.89, 0.001),
    "mean_per_class_recall": MetricValue(0.66, 0.002),
}

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


def store_run(
    output_dir: Path,
    samples: pl.DataFrame,
    *,
    model: str,
    run_id: str,
    benchmark: str = "imagenet",
    variant: str = "imagenet",
    spec_hash: str = "spec-v1",
    limit: int | None = None,
) -> Path:
    """Store ``samples`` (a per-sample frame with ``key``, ``gold`` and ``correct``) as a finished zero-shot run
    of ``model`` in ``output_dir``: its parquet file, a manifest and its aggregate row (accuracy). Returns the
    per-sample file."""
    results = ResultsDir(output_dir)
    files = results.run_files(model, f"{variant}_0shot_{run_id}")
    results.write_per_sample(files, samples)
    accuracy = MetricValue(float(samples["correct"].mean() or 0.0), 0.0)  # type: ignore[arg-type]
    record = RunRecord(
        Subject(model=model, benchmark=benchmark, variant=variant, spec_hash=spec_hash),
        Settings(limit=limit),
        Provenance(run_id=run_id),
        Outcome(metrics={"acc": accuracy}, n_samples=samples.height),
    )
    results.write_record(files, record)
    output_file = files.output_file
    facts = run_facts(
        model=model,
        benchmark=benchmark,
        n_samples=samples.height,
        limit=limit,
        run_id=run_id,
        output_file=output_file,
    )
    upsert_aggregate(output_dir, run_rows(facts, variant, {"acc": accuracy}, ("acc", "acc")))
    return files.per_sample
