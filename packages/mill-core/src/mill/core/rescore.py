"""Re-scoring stored results with the current grading rules, without running the model (``mill rescore``).

A kind with versioned rules grades a stored per-sample frame again through its
:class:`~mill.core.task_kind.Rescorer` (the generative multiple-choice kind's is
:func:`mill.core.kinds.generative_mcq.rescore_mcq`): a parser change then costs a re-parse of the stored
responses, not hours of inference. :func:`rescore_outputs` applies it to the runs stored in a results directory
and updates their files in place.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl
from attrs import frozen

from mill.core.atomic import write_bytes_atomic, write_json_atomic, write_parquet_atomic
from mill.core.convert import CONVERTER, structure
from mill.core.errors import ResultsError
from mill.core.registry import SpecRegistry
from mill.core.results import update_run_metrics
from mill.core.task_kind import Regraded, Rescorer, UnknownKindError, Variant, get_kind

#: The version a run graded by versioned rules was graded with when its manifest records none: results
#: written before Mill recorded versions were parsed by the first rules.
UNRECORDED_SCORER_VERSION = 1

RescoreStatus = Literal["rescored", "would rescore", "current", "newer"]


@frozen
class RunRescore:
    """What ``mill rescore`` did to one stored run.

    ``status`` is ``rescored`` (files updated), ``would rescore`` (``--dry-run``), ``current`` (graded by the
    current rules already: nothing written) or ``newer`` (graded by rules newer than this Mill's: nothing
    written). ``changed`` counts the answers whose grade the current rules change, whatever the status.
    """

    manifest: Path
    model: str
    variant: str
    n_samples: int
    changed: int
    from_version: int
    to_version: int
    status: RescoreStatus


def stored_manifests(output_dir: Path) -> list[Path]:
    """Every run manifest under ``output_dir/outputs/{model_slug}/``, sorted."""
    return sorted((output_dir / "outputs").glob("*/*.json"))


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
    last its manifest (metrics, ``scorer_version`` and a ``rescored`` note) are rewritten, each atomically; a
    run cut short is completed by running again. With ``dry_run`` nothing is written.

    ``registry`` supplies the variant of a manifest written before manifests recorded it.

    Raises:
        ResultsError: a manifest or per-sample file that cannot be read or lacks what re-grading needs.
    """
    done = []
    for path in stored_manifests(output_dir):
        manifest = _read_manifest(path)
        if models and manifest.get("model") not in models:
            continue
        if benchmarks and not {manifest.get("benchmark"), manifest.get("variant")} & set(benchmarks):
            continue
        variant = _recorded_variant(path, manifest, registry)
        rescorer = get_kind(variant.kind).rescorer
        if rescorer is not None:
            done.append(_rescore_run(output_dir, path, manifest, variant, rescorer, dry_run=dry_run))
    return done


def _rescore_run(
    output_dir: Path,
    path: Path,
    manifest: dict[str, Any],
    variant: Variant,
    rescorer: Rescorer,
    *,
    dry_run: bool,
) -> RunRescore:
    recorded = manifest.get("scorer_version")
    stored = UNRECORDED_SCORER_VERSION if recorded is None else _field(path, manifest, "scorer_version", int)
    parquet = path.with_suffix(".parquet")
    # A rescore interrupted after rewriting the per-sample file kept the original beside it: grade that one
    # again, so the re-run counts the answers changed against what the older rules produced.
    kept = _kept_file(parquet, stored)
    source = kept if kept.exists() else parquet
    try:
        frame = pl.read_parquet(source)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ResultsError(
            f"{source}: cannot read the per-sample file of the run in {path.name} ({exc}); "
            "re-run the evaluation, or move the manifest aside to skip the run"
        ) from None
    regraded = rescorer.rescore(variant, frame, _field(path, manifest, "seed", int))
    status: RescoreStatus
    if stored == rescorer.version:
        status = "current"
    elif stored > rescorer.version:
        status = "newer"
    elif dry_run:
        status = "would rescore"
    else:
        status = "rescored"
        _write_rescored(output_dir, path, manifest, variant, regraded, stored, rescorer.version)
    return RunRescore(
        manifest=path,
        model=str(manifest.get("model")),
        variant=str(manifest.get("variant")),
        n_samples=frame.height,
        changed=regraded.changed,
        from_version=stored,
        to_version=rescorer.version,
        status=status,
    )


def _write_rescored(
    output_dir: Path,
    path: Path,
    manifest: dict[str, Any],
    variant: Variant,
    regraded: Regraded,
    stored: int,
    version: int,
) -> None:
    """Keep the previous per-sample file, then rewrite the per-sample file, the aggregate rows and the manifest.

    The manifest goes last: until it records the new version, running again redoes every step (the kept file,
    once written, is never replaced, so it always holds what the older rules produced).
    """
    parquet = path.with_suffix(".parquet")
    kept = _kept_file(parquet, stored)
    if not kept.exists():
        write_bytes_atomic(kept, [parquet.read_bytes()])
    write_parquet_atomic(parquet, regraded.scored.frame)
    metrics = regraded.scored.metrics
    update_run_metrics(
        output_dir,
        output_file=str(parquet.relative_to(output_dir)),
        run_id=_field(path, manifest, "run_id", str),
        variant=_field(path, manifest, "variant", str),
        metrics=metrics,
        headline_source=variant.metric,
        scorer_version=version,
    )
    notes = [*manifest.get("rescored", [])]
    notes.append(
        {
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "from_scorer_version": stored,
            "to_scorer_version": version,
            "changed": regraded.changed,
            "previous_file": kept.name,
        }
    )
    write_json_atomic(
        path,
        {
            **manifest,
            "variant_config": CONVERTER.unstructure(variant),
            "metrics": {name: {"value": m.value, "stderr": m.stderr} for name, m in metrics.items()},
            "scorer_version": version,
            "rescored": notes,
        },
    )


def _kept_file(parquet: Path, stored: int) -> Path:
    """Where a rescore keeps the per-sample file graded by scorer version ``stored`` (written once, never replaced)."""
    return parquet.with_name(f"{parquet.stem}.scorer{stored}.parquet")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read the run manifest ({exc}); move it aside to skip the run") from None
    if not isinstance(manifest, dict):
        raise ResultsError(f"{path}: not a Mill run manifest (expected a JSON object)")
    return manifest


_F = TypeVar("_F")


def _field(path: Path, manifest: Mapping[str, Any], key: str, kind: type[_F]) -> _F:
    value = manifest.get(key)
    if not isinstance(value, kind):
        raise ResultsError(f"{path}: not a Mill run manifest ({key!r}: expected {kind.__name__}, got {value!r})")
    return value


def _recorded_variant(path: Path, manifest: Mapping[str, Any], registry: SpecRegistry) -> Variant:
    """The variant a run was scored as: recorded in its manifest, or for a manifest written before variants
    were recorded, the variant of that name in the spec of the run's benchmark."""
    config = manifest.get("variant_config")
    if isinstance(config, dict):
        try:
            kind = get_kind(str(config.get("kind")))
            return structure(config, kind.variant_type, path="variant_config")
        except (UnknownKindError, ValueError) as exc:
            raise ResultsError(f"{path}: {exc}") from None
    benchmark, name = _field(path, manifest, "benchmark", str), _field(path, manifest, "variant", str)
    spec = registry.specs.get(benchmark)
    if spec is None or name not in spec.variants:
        raise ResultsError(
            f"{path}: the manifest predates recorded variants and no spec declares benchmark {benchmark!r} with "
            f"variant {name!r}; pass the spec the run used with --spec"
        )
    variant = spec.variants[name]
    if variant.metric not in manifest.get("metrics", {}):
        raise ResultsError(
            f"{path}: the manifest predates recorded variants, and variant {name!r} of {spec.path} now names "
            f"the metric {variant.metric!r}, which the run did not report; pass the spec the run used with --spec"
        )
    return variant
