"""Checking a results directory against what was written, and rebuilding ``aggregate.csv`` from the manifests.

Every run's manifest records the sha256 of its per-sample file (``per_sample_sha256``) and of its own
content (``manifest_sha256``, the canonical JSON without that key: :func:`mill.core.checksum.manifest_digest`).
:func:`verify` checks every aggregate row against them, recomputes the run's metrics from the per-sample
file through its task kind (no spec or model needed: :meth:`TaskKind.metrics`), and compares the row with
the one the manifest yields. Files written before Mill recorded hashes are reported as unverifiable, not
as mismatched. :func:`rebuild` regenerates ``aggregate.csv`` from the manifests that check.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from attrs import asdict, frozen

from mill.core.arguments import SEEDS
from mill.core.checksum import MANIFEST_HASH_KEY, manifest_digest, sha256_file
from mill.core.errors import ResultsError
from mill.core.metrics import MetricValue
from mill.core.results import (
    AGGREGATE_SCHEMA,
    UPSERT_KEY,
    AggregateRow,
    RunFacts,
    read_aggregate,
    rebuild_aggregate,
    run_rows,
)
from mill.core.task_kind import UnknownKindError, get_kind

#: Manifest keys a row is rebuilt from that manifests written before hashes were recorded lack.
REBUILD_KEYS = ("task_type", "default_settings", "headline", "per_sample_sha256", MANIFEST_HASH_KEY)
# Metrics are recomputed exactly (seeded bootstrap); the tolerance only absorbs CSV float formatting.
_REL_TOL = 1e-9


class Status(str, enum.Enum):
    VERIFIED = "verified"
    MISMATCHED = "mismatched"
    UNVERIFIABLE = "unverifiable"


@frozen
class RowCheck:
    """The verdict on one aggregate row, and why (empty when verified)."""

    model: str
    task: str
    metric: str
    output_file: str
    status: Status
    detail: str


@frozen
class RunCheck:
    """The verdict on one run's files, shared by the rows pointing at them; ``rows`` are the rows its
    manifest yields (empty unless verified)."""

    status: Status
    detail: str
    rows: Sequence[AggregateRow] = ()


def verify(output_dir: Path) -> list[RowCheck]:
    """One :class:`RowCheck` per row of ``output_dir``'s ``aggregate.csv``, in file order.

    Raises:
        DamagedResultsError: ``aggregate.csv`` itself is damaged (``--rebuild`` regenerates it).
        ResultsError: ``output_dir`` does not exist (a typo must not pass for a clean bill).
    """
    _check_exists(output_dir)
    aggregate = read_aggregate(output_dir)
    runs: dict[str, RunCheck] = {}
    checks = []
    for row in aggregate.iter_rows(named=True):
        output_file = row["output_file"] or ""
        if output_file not in runs:
            runs[output_file] = check_run(output_dir, output_file)
        run = runs[output_file]
        status, detail = run.status, run.detail
        if status is Status.VERIFIED:
            detail = _row_difference(row, run.rows)
            status = Status.MISMATCHED if detail else Status.VERIFIED
        checks.append(RowCheck(row["model"], row["task"], row["metric"], output_file, status, detail))
    return checks


def _check_exists(output_dir: Path) -> None:
    if not output_dir.is_dir():
        raise ResultsError(
            f"the output directory {output_dir} does not exist; give the one `mill eval` wrote to with --output_dir "
            "(or MILL_OUTPUT_DIR)"
        )


def check_run(output_dir: Path, output_file: str) -> RunCheck:
    """Check one run's per-sample file (``output_file``, relative to ``output_dir``) and its manifest."""
    parquet = output_dir / output_file
    manifest_file = parquet.with_suffix(".json")
    if not output_file or not parquet.is_file():
        return RunCheck(Status.MISMATCHED, f"the per-sample file {parquet} is missing")
    if not manifest_file.is_file():
        return RunCheck(Status.MISMATCHED, f"the manifest {manifest_file} is missing")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return RunCheck(Status.MISMATCHED, f"the manifest {manifest_file} cannot be read ({exc})")
    if not isinstance(manifest, dict):
        return RunCheck(Status.MISMATCHED, f"the manifest {manifest_file} is not a JSON object")
    lacking = [key for key in REBUILD_KEYS if key not in manifest]
    if lacking:
        return RunCheck(Status.UNVERIFIABLE, f"{manifest_file} was written before Mill recorded hashes")
    if manifest_digest(manifest) != manifest[MANIFEST_HASH_KEY]:
        return RunCheck(Status.MISMATCHED, f"the manifest {manifest_file} differs from what was written")
    if SEEDS.problem(manifest.get("seed")):
        # Written by a Mill that ran such seeds; aggregate.csv cannot hold one (every rebuild used to crash).
        return RunCheck(Status.MISMATCHED, f"the manifest {manifest_file}: seed {SEEDS.problem(manifest.get('seed'))}")
    if sha256_file(parquet) != manifest["per_sample_sha256"]:
        return RunCheck(Status.MISMATCHED, f"the per-sample file {parquet} differs from what was written")
    try:
        kind = get_kind(manifest["task_type"])
    except UnknownKindError:
        return RunCheck(Status.UNVERIFIABLE, f"the task kind {manifest['task_type']!r} is not installed")
    try:
        frame = pl.read_parquet(parquet)
        recomputed = kind.metrics(frame, manifest["headline"]["metric"], manifest["seed"])
    except Exception as exc:  # a file with the right hash that the kind cannot score is a mismatch, not a crash
        return RunCheck(Status.MISMATCHED, f"cannot recompute the metrics from {parquet} ({exc})")
    stored = {name: MetricValue(m["value"], m["stderr"]) for name, m in manifest["metrics"].items()}
    differing = [
        name for name in stored.keys() | recomputed.keys() if not _same(stored.get(name), recomputed.get(name))
    ]
    if differing:
        return RunCheck(
            Status.MISMATCHED, f"the metrics recomputed from {parquet} differ: {', '.join(sorted(differing))}"
        )
    return RunCheck(Status.VERIFIED, "", manifest_rows(manifest, output_file))


def manifest_rows(manifest: Mapping[str, Any], output_file: str) -> list[AggregateRow]:
    """The aggregate rows a run's manifest (one with every key of :data:`REBUILD_KEYS`) yields, as the
    engine wrote them."""
    finished = dt.datetime.fromisoformat(manifest["finished_at"]).isoformat(timespec="seconds")
    facts = RunFacts(
        model=manifest["model"],
        benchmark=manifest["benchmark"],
        task_type=manifest["task_type"],
        n_samples=manifest["n_samples"],
        seed=manifest["seed"],
        limit=manifest["limit"],
        settings=manifest["settings"],
        default_settings=manifest["default_settings"],
        run_id=manifest["run_id"],
        incomplete=manifest["incomplete"],
        n_skipped=manifest["n_skipped"],
        output_file=output_file,
        finished_at=finished,
    )
    metrics = {name: MetricValue(m["value"], m["stderr"]) for name, m in manifest["metrics"].items()}
    headline = manifest["headline"]
    return run_rows(facts, manifest["variant"], metrics, (headline["metric"], headline["benchmark_metric"]))


def _row_difference(row: Mapping[str, Any], expected: Sequence[AggregateRow]) -> str:
    """Which columns of ``row`` differ from the manifest's row of the same task and metric ('' if none)."""
    matching = [r for r in expected if (r.task, r.metric) == (row["task"], row["metric"])]
    if not matching:
        return f"its manifest has no {row['task']} {row['metric']} result"
    want = asdict(matching[0])
    differing = [
        column
        for column in AGGREGATE_SCHEMA
        if not (
            _same_number(row[column], want[column]) if isinstance(want[column], float) else row[column] == want[column]
        )
    ]
    return f"differs from its manifest in {', '.join(differing)}" if differing else ""


def _same_number(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=_REL_TOL, abs_tol=1e-12)  # type: ignore[arg-type]


def _same(a: MetricValue | None, b: MetricValue | None) -> bool:
    if a is None or b is None:
        return a is b
    return _same_number(a.value, b.value) and _same_number(a.stderr, b.stderr)


@frozen
class Rebuilt:
    """What :func:`rebuild` did: the new file, the previous one kept aside, the rows written, and the
    manifests left out with why (their previous rows are kept when they were only unverifiable)."""

    path: Path
    previous: Path | None
    n_rows: int
    left_out: Sequence[tuple[Path, str]]


def rebuild(output_dir: Path) -> Rebuilt:
    """Regenerate ``aggregate.csv`` from every run manifest under ``output_dir/outputs`` that checks.

    A manifest that does not check is left out. One written before hashes were recorded cannot give its
    rows, so those of the previous ``aggregate.csv`` that point at it are kept, when that file is readable.
    A copy of the previous file is kept beside as ``aggregate.csv.{time}.bak``. The aggregate's lock is held
    from the first manifest read to the last write (:func:`~mill.core.results.rebuild_aggregate`).

    Raises:
        ResultsError: ``output_dir`` does not exist.
        ResultsWriteError: the new file could not be written.
    """
    _check_exists(output_dir)
    left_out: list[tuple[Path, str]] = []
    written: list[AggregateRow] = []

    def rows_from(previous: pl.DataFrame | None) -> list[AggregateRow]:
        runs: list[tuple[str, Sequence[AggregateRow]]] = []
        legacy: set[str] = set()
        for manifest_file in sorted((output_dir / "outputs").rglob("*.json")):
            output_file = str(manifest_file.with_suffix(".parquet").relative_to(output_dir))
            run = check_run(output_dir, output_file)
            if run.status is Status.VERIFIED:
                runs.append((run.rows[0].finished_at, run.rows))
                continue
            left_out.append((manifest_file, run.detail))
            if run.status is Status.UNVERIFIABLE:
                legacy.add(output_file)
        rows = [row for _, run_rows_ in sorted(runs, key=lambda item: item[0]) for row in run_rows_]
        kept: list[AggregateRow] = []
        if legacy and previous is not None:
            kept = [AggregateRow(**r) for r in previous.filter(pl.col("output_file").is_in(sorted(legacy))).to_dicts()]
        unique: dict[tuple[Any, ...], AggregateRow] = {}
        for row in [*kept, *rows]:  # a later run replaces an earlier one with the same key, as upserts did
            key = tuple(getattr(row, column) for column in UPSERT_KEY)
            unique.pop(key, None)
            unique[key] = row
        written.extend(unique.values())
        return written

    path, previous_file = rebuild_aggregate(output_dir, rows_from)
    return Rebuilt(path, previous_file, len(written), left_out)
