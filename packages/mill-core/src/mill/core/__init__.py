"""Mill core: the typed model, spec registry, backends interface, evaluation engine, metrics and results store.

``from mill.core import evaluate`` is the Python entry point (see :mod:`mill.core.evaluation`); it is
imported on first use, so that importing any ``mill.core`` module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mill.core.evaluation import EvalResult, evaluate


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "EvalResult"):
        from mill.core import evaluation as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EvalResult", "evaluate"]
