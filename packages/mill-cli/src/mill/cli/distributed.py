"""Data parallelism with torch.distributed: which process this is, which samples are its own, and
bringing every process's results to one.

Launch N copies of the same ``mill eval`` command, each of which evaluates a disjoint part of the samples::

    torchrun --nproc_per_node=8 -m mill.cli eval "clip[path=ViT-B-32,pretrained=laion2b_s34b_b79k]" imagenet
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m mill.cli eval ...
    # SLURM (one task per GPU): srun sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID; the batch script exports
    #   MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) MASTER_PORT=29500
    srun --ntasks-per-node=8 --gpus-per-task=1 python -m mill.cli eval ...

How ``mill eval`` uses this module, for one planned run:

1. ``info = world()`` once per process. ``with process_group(launch_device_type(device), info) as collectives:``
   joins the group (NCCL on CUDA, gloo on CPU; a no-op for a single process); on CUDA it makes the rank's
   own GPU (``cuda:<local_rank>``) the current device, so ``cuda`` names it.
2. The engine (:func:`mill.core.engine.execute`) gets the group's :class:`TorchCollectives`. Every rank opens the
   same dataset (same shards, same ``--limit`` subset, so the same keys) and evaluates its part,
   ``rank_keys(data.keys, rank, world_size)``: the split depends only on the keys and the world size. Resume
   chunks are committed by each rank for the samples it evaluated and reused by sample key, so a restart with
   another number of ranks reuses them all.
3. Zero-shot: every rank asks its backend for the classifier; they build the same one, and with a shared cache
   directory the cache's file lock lets one rank build it while the others wait and then load it.
4. Each rank hands its committed rows to rank 0 (``gather``); only rank 0 scores them, writes the per-sample
   parquet (rows are sorted by key, so it equals a single-process run's) and upserts the aggregate rows;
   the others finish without writing. The end of the ``with`` leaves the group, every rank together when they
   all completed (:func:`shutdown`).

The vllm backend refuses to run under torchrun (it spreads a model over GPUs itself, with
``tensor_parallel_size``/``data_parallel_size``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import TypeVar

from attrs import frozen

from mill.core.device import checked_device
from mill.core.errors import MillError

T = TypeVar("T")


def _dist() -> ModuleType:
    """``torch.distributed``, imported on first use: commands that never evaluate (``mill ls``,
    ``mill collect``, ``mill --help``) import this module but must not pay for torch."""
    import torch.distributed

    return torch.distributed


#: How long a rank waits for the others (at a barrier, or to gather): rank 0 may be building a large
#: model's classifier while the others wait, which takes longer than torch's 10-minute NCCL default.
GROUP_TIMEOUT = dt.timedelta(hours=2)


class DistributedError(MillError):
    """The launcher's environment (torchrun or SLURM variables) does not describe a usable process group."""


@frozen
class WorldInfo:
    """This process's place among the processes of one launch: global rank, how many, rank on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world(environ: Mapping[str, str] = os.environ) -> WorldInfo:
    """This process's :class:`WorldInfo`, from the launcher's environment (pure in ``environ``).

    torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Under SLURM, ``SLURM_PROCID``,
    ``SLURM_NTASKS`` and ``SLURM_LOCALID`` are used only when ``MASTER_ADDR`` and ``MASTER_PORT`` are set
    too: a plain batch script sees the allocation's task count although it is one process. Anything else is
    a single process.

    Raises:
        DistributedError: a variable is not a number, or the rank is outside ``[0, world_size)``.
    """
    if "WORLD_SIZE" in environ:
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    elif "SLURM_NTASKS" in environ and "MASTER_ADDR" in environ and "MASTER_PORT" in environ:
        names = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
    else:
        return WorldInfo()
    rank, world_size, local_rank = (_count(environ, name) for name in names)
    if world_size < 1 or not 0 <= rank < world_size or local_rank > rank:
        raise DistributedError(
            f"{names[0]}={rank}, {names[1]}={world_size}, {names[2]}={local_rank} do not describe a process of "
            "a launch: the rank must be in [0, world size) and the local rank at most the rank. Launch with "
            "torchrun or srun, which set them, rather than setting them by hand"
        )
    return WorldInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def launch_device_type(device: str | None) -> str:
    """The device type a distributed launch communicates over: NCCL for CUDA, gloo for CPU.

    Raises:
        BackendArgumentError: ``device`` is none this machine has.
    """
    import torch

    if device is not None:
        return str(checked_device(device, "--device", torch).type)
    return "cuda" if torch.cuda.is_available() else "cpu"


def init_process_group_if_needed(device_type: str, info: WorldInfo | None = None) -> bool:
    """Join the process group of this launch (NCCL for ``cuda``, gloo otherwise); True when there is one.

    A single process (``world_size`` 1) joins nothing. Calling it again once joined does nothing.
    ``MASTER_ADDR``/``MASTER_PORT`` come from the environment (torchrun sets them; under SLURM the batch
    script exports them).

    Raises:
        DistributedError: the environment is malformed (see :func:`world`), or MASTER_ADDR/MASTER_PORT
            are missing.
    """
    info = info or world()
    if not info.is_distributed:
        return False
    dist = _dist()
    if dist.is_initialized():
        return True
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise DistributedError(
            f"rank {info.rank} of {info.world_size} has no {' or '.join(missing)}: export "
            "MASTER_ADDR=<first node's host name> and MASTER_PORT=<a free port> before srun, or launch with torchrun"
        )
    if device_type == "cuda":
        import torch

        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(
        "nccl" if device_type == "cuda" else "gloo",
        rank=info.rank,
        world_size=info.world_size,
        timeout=GROUP_TIMEOUT,
    )
    return True


def gather_objects(obj: T) -> list[T] | None:
    """Every rank's ``obj`` (picklable), in rank order, on rank 0; None on the other ranks.

    Without a process group this is ``[obj]``. Every rank must call it, as with any collective.
    """
    dist = _dist()
    if not dist.is_initialized():
        return [obj]
    rank = dist.get_rank()
    gathered: list[T] | None = [obj] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def barrier() -> None:
    """Wait until every rank reaches this point (no-op without a process group)."""
    dist = _dist()
    if not dist.is_initialized():
        return
    if dist.get_backend() == "nccl":
        # Names this rank's GPU so NCCL does not guess (and warn) which device the barrier runs on.
        import torch

        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@frozen
class TorchCollectives:
    """The engine's :class:`~mill.core.engine.Collectives` over this launch's torch.distributed process group
    (a single process when there is none)."""

    info: WorldInfo

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    def barrier(self) -> None:
        barrier()

    def gather(self, obj: T) -> list[T] | None:
        return gather_objects(obj)


@contextmanager
def process_group(device_type: str, info: WorldInfo) -> Iterator[TorchCollectives]:
    """This launch's collectives for the body (a single process's when there is no launch): joins the
    process group first (:func:`init_process_group_if_needed`) and leaves it at the end, every rank together
    when the body completed (:func:`shutdown`).

    Raises:
        DistributedError: as :func:`init_process_group_if_needed` and :func:`shutdown` do.
    """
    init_process_group_if_needed(device_type, info)
    completed = False
    try:
        yield TorchCollectives(info)
        completed = True
    finally:
        shutdown(completed=completed)


def shutdown(*, completed: bool) -> None:
    """Leave the process group, if joined, so the launch ends cleanly.

    A rank that ``completed`` its part first waits at a barrier for the others, so every rank leaves
    together. This is what keeps a rank that finished early alive: gloo's worker thread lets go of a finished
    collective (the gather's tensors, which Python allocated) only after the caller has moved on, and if
    the interpreter is already shutting down by then, the process aborts (SIGABRT, "terminate called without
    an active exception") although its part was done. A barrier's work holds no Python tensors, and waiting
    at it gives the worker that time. A rank that failed leaves at once (the others are waiting for a
    collective it will never join; leaving ends their wait).

    Raises:
        DistributedError: this rank completed, but another one left the launch before reaching the barrier
            (that rank's own error says why).
    """
    dist = _dist()
    if not dist.is_initialized():
        return
    try:
        if completed:
            _farewell_barrier(dist)
    finally:
        dist.destroy_process_group()


def _farewell_barrier(dist: ModuleType) -> None:
    try:
        barrier()
    except RuntimeError as exc:  # gloo: "Connection closed by peer"; NCCL: DistBackendError, a RuntimeError
        raise DistributedError(
            f"rank {dist.get_rank()} of {dist.get_world_size()} completed its part, but another rank left the "
            f"launch before the end ({_first_line(exc)}); that rank's error above says why"
        ) from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _count(environ: Mapping[str, str], name: str) -> int:
    text = environ.get(name)
    if text is None or not text.strip().isdigit():
        raise DistributedError(
            f"{name}={text!r} is not a non-negative integer; the launcher (torchrun or srun) sets it, so launch "
            "with one of them, or unset WORLD_SIZE/SLURM_NTASKS to run a single process"
        )
    return int(text)
