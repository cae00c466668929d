"""The progress-reporting contract between the runner, the backends and the CLI's display."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Reports one phase at a time (loading the model, building the classifier, evaluating).

    ``start`` opens a phase (``total`` None when unknown); ``advance`` moves it on by ``n``
    units; ``finish`` closes it. The CLI renders these with rich; tests use :class:`SilentProgress`.
    """

    def start(self, phase: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def finish(self) -> None: ...


class SilentProgress:
    """A :class:`Progress` that shows nothing (``--quiet``, tests, library use)."""

    def start(self, phase: str, total: int | None = None) -> None:
        del phase, total

    def advance(self, n: int = 1) -> None:
        del n

    def finish(self) -> None:
        pass
