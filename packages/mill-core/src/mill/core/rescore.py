"""Re-scoring stored results with the current grading rules, without running the model (``mill rescore``).

A kind with versioned rules grades a stored per-sample frame again through its
:class:`~mill.core.task_kind.Rescorer` (the generative multiple-choice kind's is
:func:`mill.core.kinds.generative_mcq.rescore_mcq`): a parser change then costs a re-parse of the stored
responses, not hours of inference. :func:`rescore_outputs` applies it to the runs stored in a results directory
and updates their files in place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs
import polars as pl
from attrs import frozen

from mill.core.convert import CONVERTER, structure
from mill.core.errors import ResultsError
from mill.core.record import RescoreNote, RunRecord
from mill.core.registry import SpecRegistry
from mill.core.results import update_run_metrics
from mill.core.results_dir import ResultsDir, RunFiles
from mill.core.task_kind import Regraded, Rescorer, UnknownKindError, Variant, get_kind

#: The version a run graded by versioned rules was graded with when its record says none: results
#: written before Mill recorded versions were parsed by the first rules.
UNRECORDED_SCORER_VERSION = 1

RescoreStatus = Literal["rescored", "would rescore", "current", "newer"]


@frozen
class RunRescore:
    """What ``mill rescore`` did to one stored run.

    ``status`` is ``rescored`` (files updated), ``would rescore`` (``--dry-run``), ``current`` (graded by the
    current rules already: nothing written) or ``newer`` (graded by rules newer than this Mill's: nothing
    written). ``changed`` counts the answers whose grade the current rules change, whatever the status.
    ``output_file`` is the per-sample file relative to the results directory.
    """

    manifest: Path
    output_file: str
    model: str
    variant: str
    n_samples: int
    changed: int
    from_version: int
    to_version: int
    status: RescoreStatus


def rescore_outputs(
    output_dir: Path,
    registry: SpecRegistry,
    *,
    models: Sequence[str] = (),
    benchmarks: Sequence[str] = (),
    dry_run: bool = False,
) -> list[RunRescore]:
    """Grade every stored run of a kind with versioned rules again with the current rules, without the model.

    Runs are selected by model identity (``models``) and by benchmark or variant name (``benchmarks``); empty
    selects all. For a run graded by older rules, the previous per-sample file is kept beside it as
    ``{stem}.scorer{N}.parquet``, then the per-sample file, the run's ``aggregate.csv`` rows (in place) and
    last its record (metrics, ``scorer_version``, the per-sample file's hash and a ``rescored`` note, its own
    hash sealed again) are rewritten, each atomically; a run cut short is completed by running again. With
    ``dry_run`` nothing is written.

    ``registry`` supplies the variant of a record written before records held it.

    Raises:
        ResultsError: a record or per-sample file that cannot be read or lacks what re-grading needs.
    """
    results = ResultsDir(output_dir)
    done = []
    for files in results.stored_runs():
        record = _read_record(results, files)
        if models and record.subject.model not in models:
            continue
        if benchmarks and not {record.subject.benchmark, record.subject.variant} & set(benchmarks):
            continue
        variant = _recorded_variant(files, record, registry)
        rescorer = get_kind(variant.kind).rescorer
        if rescorer is not None:
            done.append(_rescore_run(results, files, record, variant, rescorer, dry_run=dry_run))
    return done


def _rescore_run(
    results: ResultsDir, files: RunFiles, record: RunRecord, variant: Variant, rescorer: Rescorer, *, dry_run: bool
) -> RunRescore:
    recorded = record.outcome.scorer_version
    stored = UNRECORDED_SCORER_VERSION if recorded is None else recorded
    # A rescore interrupted after rewriting the per-sample file kept the original beside it: grade that one
    # again, so the re-run counts the answers changed against what the older rules produced.
    kept = files.kept(stored)
    source = kept if kept.exists() else files.per_sample
    try:
        frame = pl.read_parquet(source)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ResultsError(
            f"{source}: cannot read the per-sample file of the run in {files.record.name} ({exc}); "
            "re-run the evaluation, or move the manifest aside to skip the run"
        ) from None
    if record.settings.seed is None:
        raise ResultsError(f"{files.record}: not a Mill run manifest (it records no seed to grade with)")
    regraded = rescorer.rescore(variant, frame, record.settings.seed)
    status: RescoreStatus
    if stored == rescorer.version:
        status = "current"
    elif stored > rescorer.version:
        status = "newer"
    elif dry_run:
        status = "would rescore"
    else:
        status = "rescored"
        _write_rescored(results, files, record, variant, regraded, stored, rescorer.version)
    return RunRescore(
        manifest=files.record,
        output_file=files.output_file,
        model=record.subject.model,
        variant=record.subject.variant,
        n_samples=frame.height,
        changed=regraded.changed,
        from_version=stored,
        to_version=rescorer.version,
        status=status,
    )


def _write_rescored(
    results: ResultsDir,
    files: RunFiles,
    record: RunRecord,
    variant: Variant,
    regraded: Regraded,
    stored: int,
    version: int,
) -> None:
    """Keep the previous per-sample file, then rewrite the per-sample file, the aggregate rows and the record.

    The record goes last: until it records the new version, running again redoes every step (the kept file,
    once written, is never replaced, so it always holds what the older rules produced).
    """
    kept = results.keep_per_sample(files, stored)
    per_sample_sha256 = results.write_per_sample(files, regraded.scored.frame)
    metrics = regraded.scored.metrics
    update_run_metrics(
        results.root,
        output_file=files.output_file,
        run_id=record.provenance.run_id,
        variant=record.subject.variant,
        metrics=metrics,
        headline_source=variant.metric,
        scorer_version=version,
    )
    note = RescoreNote(
        at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        from_scorer_version=stored,
        to_scorer_version=version,
        changed=regraded.changed,
        previous_file=kept.name,
    )
    # Built from the record, never copied and patched: every field a rescore changes, hashes included.
    rescored = attrs.evolve(
        record,
        settings=attrs.evolve(record.settings, variant_config=CONVERTER.unstructure(variant)),
        provenance=attrs.evolve(record.provenance, rescored=(*record.provenance.rescored, note)),
        outcome=attrs.evolve(record.outcome, metrics=dict(metrics), scorer_version=version),
    )
    results.write_record(files, rescored.with_digests(per_sample_sha256))


def _read_record(results: ResultsDir, files: RunFiles) -> RunRecord:
    stored = results.read_record(files)
    if stored.record is None:
        raise ResultsError(
            f"{files.record}: cannot read the run manifest (it {stored.problem}); move it aside to skip the run"
        )
    return stored.record


def _recorded_variant(files: RunFiles, record: RunRecord, registry: SpecRegistry) -> Variant:
    """The variant a run was scored as: in its record, or for a record written before records held variants,
    the variant of that name in the spec of the run's benchmark."""
    path, config = files.record, record.settings.variant_config
    if config is not None:
        try:
            kind = get_kind(str(config.get("kind")))
            return structure(dict(config), kind.variant_type, path="variant_config")
        except (UnknownKindError, ValueError) as exc:
            raise ResultsError(f"{path}: {exc}") from None
    benchmark, name = record.subject.benchmark, record.subject.variant
    spec = registry.specs.get(benchmark)
    if spec is None or name not in spec.variants:
        raise ResultsError(
            f"{path}: the manifest predates recorded variants and no spec declares benchmark {benchmark!r} with "
            f"variant {name!r}; pass the spec the run used with --spec"
        )
    variant = spec.variants[name]
    if variant.metric not in record.outcome.metrics:
        raise ResultsError(
            f"{path}: the manifest predates recorded variants, and variant {name!r} of {spec.path} now names "
            f"the metric {variant.metric!r}, which the run did not report; pass the spec the run used with --spec"
        )
    return variant
