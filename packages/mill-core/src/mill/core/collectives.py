"""What a data-parallel launch lends the engine: ranks, a barrier and a gather (torch.distributed's, handed in by
the CLI), and how the samples are split between ranks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from attrs import frozen

T = TypeVar("T")


class Collectives(Protocol):
    """What a data-parallel launch lends the engine: this process's rank, and the two collectives it uses."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def barrier(self) -> None: ...

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` in rank order on rank 0; None on the other ranks."""
        ...


@frozen
class SingleProcess:
    """The collectives of a run that is not part of a launch: one rank, nothing to wait for."""

    rank: int = 0
    world_size: int = 1

    def barrier(self) -> None:
        pass

    def gather(self, obj: T) -> list[T] | None:
        return [obj]


def rank_keys(keys: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The keys rank ``rank`` of ``world_size`` evaluates: every ``world_size``-th of the sorted keys.

    Pure and independent of the order of ``keys``, so every rank computes the same split; the ranks'
    parts are disjoint, cover ``keys``, and differ in size by at most one. Striding (rather than
    contiguous blocks) spreads the class-ordered shards' classes, and their cost, evenly over the ranks.

    Raises:
        ValueError: ``rank`` is not in ``[0, world_size)``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return sorted(keys)[rank::world_size]
