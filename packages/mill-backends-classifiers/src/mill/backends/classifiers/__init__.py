"""Mill's supervised classifier backends: timm, torchvision and transformers image classifiers, each with the
preprocessing its own library prescribes (closed-set classification of the ImageNet family).

Importing this package imports no ML framework; :class:`ClassifierBackend` (torch) is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mill.backends.classifiers.args import TimmArgs, TorchvisionArgs, TransformersArgs
from mill.backends.classifiers.memory import InMemoryClassifier, from_model
from mill.backends.classifiers.plugin import hf_classifier_plugin, timm_plugin, torchvision_plugin

if TYPE_CHECKING:
    from mill.backends.classifiers.backend import ClassifierBackend


def __getattr__(name: str) -> Any:
    if name == "ClassifierBackend":
        from mill.backends.classifiers.backend import ClassifierBackend

        return ClassifierBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClassifierBackend",
    "InMemoryClassifier",
    "TimmArgs",
    "TorchvisionArgs",
    "TransformersArgs",
    "from_model",
    "hf_classifier_plugin",
    "timm_plugin",
    "torchvision_plugin",
]
