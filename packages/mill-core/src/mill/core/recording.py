"""Recording a run: score the union of its committed answers once, build its :class:`~mill.core.record.RunRecord`,
and store the per-sample file, the record and the aggregate rows in the results directory.

The record is built here and nowhere else; the rows are derived from it (:meth:`RunRecord.rows`), so what
``aggregate.csv`` holds and what ``mill verify`` rebuilds from the record cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from attrs import frozen

from mill.core.backend import Backend
from mill.core.chunks import ChunkStore, MemoryChunkStore
from mill.core.convert import CONVERTER
from mill.core.environment import MILL_DISTRIBUTIONS, versions
from mill.core.errors import DamagedResultsError, DataError
from mill.core.metrics import MetricValue
from mill.core.planning import PlannedRun, RunOptions
from mill.core.record import Headline, Outcome, Provenance, RunRecord, Settings, Shard, Skipped, Subject, to_json
from mill.core.results import AggregateRow, upsert_aggregate
from mill.core.results_dir import ResultsDir, run_stem, settings_digest
from mill.core.sample import Dataset
from mill.core.task_kind import Scored, scorer_version

Store = ChunkStore | MemoryChunkStore


@frozen
class RunResult:
    """What one finished run produced: its record, aggregate rows and per-sample frame (the per-sample file's
    columns). ``per_sample_file`` is None when nothing was written (``output_dir=None``)."""

    run: PlannedRun
    rows: Sequence[AggregateRow]
    samples: pl.DataFrame
    record: RunRecord
    per_sample_file: Path | None

    @property
    def metrics(self) -> Mapping[str, MetricValue]:
        return self.record.outcome.metrics

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The record as its JSON manifest holds it."""
        return to_json(self.record)


@frozen
class Answered:
    """A run whose every sample is answered (or skipped): what recording needs of the running."""

    run: PlannedRun
    options: RunOptions
    backend: Backend
    task: Any
    data: Dataset
    raw: pl.DataFrame
    seed: int
    settings: Mapping[str, str]
    store: Store
    n_reused: int


def record_run(answered: Answered) -> RunResult:
    """Score ``answered`` once, and write its per-sample file, record and aggregate rows (unless the run keeps
    nothing on disk).

    Raises:
        DataError: every sample was skipped as unreadable.
        ResultsWriteError, DamagedResultsError: a file could not be written; aggregate.csv is damaged.
    """
    scored, skipped = _score(answered)
    record = build_record(answered, scored, skipped, dt.datetime.now(dt.timezone.utc))
    out = answered.options.output_dir
    if out is None:
        return RunResult(answered.run, record.rows(""), scored.frame, record, None)
    results = ResultsDir(out)
    spec, info = answered.run.spec, answered.backend.info
    stem = run_stem(
        answered.run.variant_name,
        seed=answered.seed,
        default_seed=spec.seed,
        limit=answered.options.limit,
        settings=record.settings.settings,
        default=info.default_settings,
    )
    files = results.run_files(info.identity, stem)
    record = record.with_digests(results.write_per_sample(files, scored.frame))
    results.write_record(files, record)
    rows = record.rows(files.output_file)
    try:
        upsert_aggregate(out, rows)
    except DamagedResultsError as exc:
        raise DamagedResultsError(
            f"this run's results are written to {files.per_sample} and its manifest, but not added to "
            f"aggregate.csv: {exc}"
        ) from None
    return RunResult(answered.run, rows, scored.frame, record, files.per_sample)


def _score(answered: Answered) -> tuple[Scored, pl.DataFrame]:
    """The kind's scores of the answered samples, and the skipped ones (key, shard, reason)."""
    raw, data, run = answered.raw, answered.data, answered.run
    missing = set(data.keys) - set(raw["key"].to_list())
    if missing:
        raise RuntimeError(f"{len(missing)} samples were neither evaluated nor skipped, e.g. {sorted(missing)[:3]}")
    skipped = raw.filter(pl.col("skipped").is_not_null()).select("key", "shard", "skipped")
    if len(skipped) == len(raw):
        raise DataError(
            f"every one of the {len(raw)} samples from {data.source} was skipped as unreadable "
            f"(first: {skipped['skipped'][0]}); check the data"
        )
    evaluated = raw.filter(pl.col("skipped").is_null()).drop("skipped")
    return run.kind.score(answered.task, run.variant, evaluated, answered.seed), skipped


def build_record(answered: Answered, scored: Scored, skipped: pl.DataFrame, finished: dt.datetime) -> RunRecord:
    """Everything that produced the run's numbers, and the numbers (its files' hashes are sealed when written)."""
    run, info = answered.run, answered.backend.info
    subject = Subject(
        model=info.identity,
        model_spec=run.model.spec.text,
        backend=run.model.backend,
        model_revision=info.revision,
        benchmark=run.spec.name,
        variant=run.variant_name,
        task_type=run.kind.name,
        spec_file=str(run.spec.path),
        spec_hash=run.spec.content_hash,
    )
    settings = Settings(
        settings=settings_digest(answered.settings),
        seed=answered.seed,
        limit=answered.options.limit,
        default_settings=info.default_settings,
        resolved_args=dict(info.resolved_args),
        # The variant as scored (metric name, unparsed policy, ...): `mill rescore` grades with it again.
        variant_config=CONVERTER.unstructure(run.variant),
        headline=Headline(metric=run.variant.metric, benchmark_metric=run.spec.headline_metric),
        rolls_up=run.rolls_up,
        on_bad_sample=answered.options.on_bad_sample,
    )
    outcome = Outcome(
        metrics=dict(scored.metrics),
        n_samples=len(scored.frame),
        n_skipped=len(skipped),
        incomplete=bool(answered.data.incomplete),
        skipped=tuple(Skipped(key, shard, reason) for key, shard, reason in skipped.iter_rows()),
        # Out of the run's identity: a parser change re-grades stored answers (`mill rescore`), not the run.
        scorer_version=scorer_version(run.kind),
    )
    return RunRecord(subject, settings, _provenance(answered, finished), outcome)


def _provenance(answered: Answered, finished: dt.datetime) -> Provenance:
    info, store, out = answered.backend.info, answered.store, answered.options.output_dir
    return Provenance(
        run_id=store.run_id,
        finished_at=finished.isoformat(),
        command=answered.options.command_line,
        data_source=answered.data.source,
        shards=tuple(Shard(s.name, s.size, s.sha256, s.version) for s in answered.data.shards),
        versions={
            "python": platform.python_version(),
            **versions([*MILL_DISTRIBUTIONS, "torch", "polars"]),
            **dict(info.library_versions),
            "cuda": info.cuda_version,
        },
        device_type=info.device_type,
        run_info=dict(answered.backend.run_info()),
        run_dir=None if store.path is None or out is None else str(store.path.relative_to(out)),
        n_reused=answered.n_reused,
        started_at=store.started_at,
    )
