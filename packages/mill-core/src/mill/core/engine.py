"""The evaluation engine, by job: :mod:`~mill.core.planning` validates every model × benchmark pair up front,
:mod:`~mill.core.running` runs each one with chunked, resumable commits, and :mod:`~mill.core.recording` scores
it once and stores its record, per-sample file and aggregate rows. This module gathers their public names.

The engine imports no ML framework. What needs one is handed in by the caller: the data opener (mill-data),
the loaded backend (through its plugin), and the collectives of a distributed launch (torch.distributed,
:mod:`~mill.core.collectives`). Defaults the environment sets live in :mod:`~mill.core.environment`.
"""

from __future__ import annotations

from mill.core.collectives import Collectives, SingleProcess, rank_keys
from mill.core.environment import (
    CHUNK_SIZE_ENV,
    DEFAULT_CHUNK_SIZE,
    MILL_DISTRIBUTIONS,
    chunk_size_from_env,
    default_cache_dir,
    default_output_dir,
    versions,
)
from mill.core.planning import (
    ModelRef,
    PlannedRun,
    RunOptions,
    check_label_space,
    load_backend,
    pick_variant,
    plan_runs,
    resolve_model_ref,
)
from mill.core.recording import RunResult
from mill.core.running import RunInterrupted, execute

__all__ = [
    "CHUNK_SIZE_ENV",
    "DEFAULT_CHUNK_SIZE",
    "MILL_DISTRIBUTIONS",
    "Collectives",
    "ModelRef",
    "PlannedRun",
    "RunInterrupted",
    "RunOptions",
    "RunResult",
    "SingleProcess",
    "check_label_space",
    "chunk_size_from_env",
    "default_cache_dir",
    "default_output_dir",
    "execute",
    "load_backend",
    "pick_variant",
    "plan_runs",
    "rank_keys",
    "resolve_model_ref",
    "versions",
]
