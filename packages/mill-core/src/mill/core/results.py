"""The results store: ``aggregate.csv`` (one row per model × task × metric × run settings), and per
run a per-sample parquet file with its JSON manifest under ``outputs/{model_slug}/``.

Every write is atomic (:mod:`mill.core.atomic`), and ``aggregate.csv`` updates are
serialised with a file lock, so concurrent ``mill eval`` processes sharing an output directory
leave a valid file holding all their rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from attrs import asdict, frozen
from filelock import FileLock

from mill.core.atomic import atomic_path, remove_stale_temporaries, write_parquet_atomic
from mill.core.errors import ResultsError
from mill.core.metrics import MetricValue

AGGREGATE_FILE = "aggregate.csv"

# Column order is part of the interface: these come first, in this order.
AGGREGATE_SCHEMA: dict[str, Any] = {
    "model": pl.String,
    "benchmark": pl.String,
    "task": pl.String,
    "task_type": pl.String,
    "n_shot": pl.Int64,
    "metric": pl.String,
    "performance": pl.Float64,
    "stderr": pl.Float64,
    "n_samples": pl.Int64,
    "seed": pl.Int64,
    "limit": pl.Int64,
    "settings": pl.String,
    "run_id": pl.String,
    "default_settings": pl.Boolean,
    "incomplete": pl.Boolean,
    "n_skipped": pl.Int64,
    "output_file": pl.String,
    "finished_at": pl.String,
}

# A row replaces an earlier one only when all of these match: a --limit smoke run, another
# seed or another precision never replaces a full run's row.
UPSERT_KEY = ("model", "task", "n_shot", "metric", "seed", "limit", "settings")


@frozen
class AggregateRow:
    """One line of aggregate.csv. ``performance`` is a fraction; ``stderr`` a bootstrap SEM."""

    model: str
    benchmark: str
    task: str
    task_type: str
    n_shot: int
    metric: str
    performance: float
    stderr: float | None
    n_samples: int
    seed: int
    limit: int | None
    settings: str
    run_id: str
    default_settings: bool
    incomplete: bool
    n_skipped: int
    output_file: str
    finished_at: str


def model_slug(identity: str) -> str:
    """A directory name for a model identity: ``/`` becomes ``__``, other unsafe characters ``-``."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", identity.replace("/", "__"))


def settings_digest(settings: Mapping[str, object]) -> str:
    """A short readable digest of output-changing arguments: ``dtype=bfloat16,max_new_tokens=32``."""
    return ",".join(f"{key}={settings[key]}" for key in sorted(settings))


def run_stem(task: str, *, seed: int, default_seed: int, limit: int | None, settings: str, default: bool) -> str:
    """File stem of a run's outputs: ``{task}_0shot`` plus a suffix naming whatever is non-default,
    so that runs with another seed, limit or settings never overwrite each other."""
    parts = [f"{task}_0shot"]
    if seed != default_seed:
        parts.append(f"seed{seed}")
    if limit is not None:
        parts.append(f"limit{limit}")
    if not default:
        parts.append(re.sub(r"[^A-Za-z0-9.=+-]", "-", settings.replace("=", "-")))
    return "_".join(parts)


def ensure_output_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed and return it.

    Raises:
        ResultsError: it cannot be created (a parent is a file, no permission, read-only disk),
            naming the directory and how to choose another.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(
            f"cannot create the output directory {path} ({exc.strerror}); "
            "choose another with --output_dir or MILL_OUTPUT_DIR"
        ) from None
    return path


def read_aggregate(output_dir: Path) -> pl.DataFrame:
    """Every row of ``aggregate.csv`` (an empty frame with the schema when there is none).

    Raises:
        ResultsError: when the file exists but cannot be parsed.
    """
    path = output_dir / AGGREGATE_FILE
    if not path.exists():
        return pl.DataFrame(schema=AGGREGATE_SCHEMA)
    try:
        frame = pl.read_csv(path, schema_overrides=AGGREGATE_SCHEMA)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ResultsError(f"{path}: cannot read results ({exc}); move the file aside to start afresh") from None
    missing = [column for column in AGGREGATE_SCHEMA if column not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: not a Mill aggregate file (missing columns {', '.join(missing)})")
    return frame.select(list(AGGREGATE_SCHEMA))


def _key(frame: pl.DataFrame) -> pl.Series:
    return frame.select(
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in UPSERT_KEY], separator="\x1f")
    ).to_series()


def upsert_aggregate(output_dir: Path, rows: Sequence[AggregateRow]) -> Path:
    """Insert ``rows`` into ``aggregate.csv``, replacing rows with the same upsert key.

    Serialised across processes with a lock file beside the CSV; the CSV is replaced atomically.
    """
    path = output_dir / AGGREGATE_FILE
    new = pl.DataFrame([asdict(row) for row in rows], schema=AGGREGATE_SCHEMA)
    ensure_output_dir(output_dir)
    with FileLock(str(path) + ".lock"):
        # Under the lock no other writer is mid-update, so a temporary file left here belongs to a
        # process killed while updating.
        remove_stale_temporaries(output_dir, AGGREGATE_FILE)
        existing = read_aggregate(output_dir)
        kept = existing.filter(~_key(existing).is_in(_key(new).implode()))
        merged = pl.concat([kept, new], how="vertical")
        with atomic_path(path) as tmp:
            merged.write_csv(tmp)
    return path


@frozen
class RunFacts:
    """What every aggregate row of one run shares."""

    model: str
    benchmark: str
    task_type: str
    n_samples: int
    seed: int
    limit: int | None
    settings: str
    default_settings: bool
    run_id: str
    incomplete: bool
    n_skipped: int
    output_file: str
    finished_at: str


def run_rows(
    facts: RunFacts,
    variant: str,
    metrics: Mapping[str, MetricValue],
    headline: tuple[str, str] | None,
) -> list[AggregateRow]:
    """One row per metric of ``variant``, plus the benchmark's rollup row unless ``headline`` is None.

    ``headline`` is (variant metric, benchmark headline metric): the rollup row has ``task`` =
    the benchmark name and carries the variant metric under the headline name, keeping the
    variant's ``task_type``, so that a CLIP and a VLM line up under one task in ``mill collect``.
    When the variant is named like its benchmark and its metric is the headline, the variant
    row is the rollup row. None (a variant the model does not get by default) adds no rollup row.
    """
    shared = asdict(facts)
    rows = [
        AggregateRow(task=variant, n_shot=0, metric=name, performance=m.value, stderr=m.stderr, **shared)
        for name, m in metrics.items()
    ]
    if headline is None:
        return rows
    source, target = headline
    if (variant, source) != (facts.benchmark, target):
        value = metrics[source]
        rows.append(
            AggregateRow(
                task=facts.benchmark,
                n_shot=0,
                metric=target,
                performance=value.value,
                stderr=value.stderr,
                **shared,
            )
        )
    return rows


def per_sample_path(output_dir: Path, identity: str, stem: str) -> Path:
    return output_dir / "outputs" / model_slug(identity) / f"{stem}.parquet"


def write_per_sample(path: Path, frame: pl.DataFrame) -> None:
    """Write one row per sample; ``frame`` is sorted by ``key`` (the order never depends on batching or workers)."""
    write_parquet_atomic(path, frame)
