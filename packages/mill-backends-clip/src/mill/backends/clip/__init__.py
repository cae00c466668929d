"""Mill's clip backend: zero-shot classification of open_clip models, as the LAION reference protocol does it.

Importing this package imports no ML framework; :class:`ClipBackend` (torch, open_clip) is loaded on
first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mill.backends.clip.args import ClipArgs
from mill.backends.clip.memory import InMemoryClip, from_model
from mill.backends.clip.plugin import ClipPlugin, plugin
from mill.backends.clip.tiny import TinyModel, write_tiny_model
from mill.core.precision import PRECISIONS, Precision

if TYPE_CHECKING:
    from mill.backends.clip.backend import ClipBackend


def __getattr__(name: str) -> Any:
    if name == "ClipBackend":
        from mill.backends.clip.backend import ClipBackend

        return ClipBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRECISIONS",
    "ClipArgs",
    "ClipBackend",
    "ClipPlugin",
    "InMemoryClip",
    "Precision",
    "TinyModel",
    "from_model",
    "plugin",
    "write_tiny_model",
]
