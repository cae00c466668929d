"""The ``mill.backends`` entry points of this distribution (``timm``, ``torchvision``, ``hf_classifier``) and the
claims that route bare hub ids and folders to them. Imports no ML framework until ``capabilities`` or ``load``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from attrs import frozen

from mill.backends.classifiers.args import TimmArgs, TorchvisionArgs, TransformersArgs
from mill.backends.classifiers.model_config import read_config
from mill.core.backend import Backend, BackendArgs, Capabilities, RunContext
from mill.core.kinds import classification

_Args = TypeVar("_Args", TimmArgs, TorchvisionArgs, TransformersArgs)


def classifier_capabilities(n_outputs: int | None) -> Capabilities:
    """Closed-set classification of images by a head of ``n_outputs`` classes (None: not known before loading)."""
    return Capabilities(kinds=frozenset({classification.NAME}), modalities=frozenset({"image"}), n_outputs=n_outputs)


@frozen
class ClassifierPlugin(Generic[_Args]):
    """One model family: how its arguments parse, how many classes its head scores (from configuration only),
    and how it loads; the last two are ``module:function`` names, imported when called."""

    parse: Callable[[BackendArgs], _Args]
    outputs: str
    loader: str

    def capabilities(self, args: BackendArgs) -> Capabilities:
        """Raises BackendArgumentError for bad arguments, ModelNotFoundError for a model the library lacks."""
        n_outputs: int | None = _imported(self.outputs)(self.parse(args))
        return classifier_capabilities(n_outputs)

    def load(self, args: BackendArgs, context: RunContext) -> Backend:
        from mill.backends.classifiers.backend import ClassifierBackend

        return ClassifierBackend.load(self.parse(args), _imported(self.loader), context)


def _imported(target: str) -> Any:
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


_FAMILIES = "mill.backends.classifiers.families"
timm_plugin = ClassifierPlugin(TimmArgs.from_mapping, f"{_FAMILIES}:timm_outputs", f"{_FAMILIES}:load_timm")
torchvision_plugin = ClassifierPlugin(
    TorchvisionArgs.from_mapping, f"{_FAMILIES}:torchvision_outputs", f"{_FAMILIES}:load_torchvision"
)
hf_classifier_plugin = ClassifierPlugin(
    TransformersArgs.from_mapping, f"{_FAMILIES}:transformers_outputs", f"{_FAMILIES}:load_transformers"
)


def claim_transformers(path: str) -> Mapping[str, object] | None:
    """A transformers image classifier (its config's ``architectures`` end in ``ForImageClassification``)."""
    config = read_config(path)
    architectures = (config or {}).get("architectures") or []
    if any(str(name).endswith("ForImageClassification") for name in architectures):
        return {"path": path}
    return None


def claim_timm(path: str) -> Mapping[str, object] | None:
    """A timm model repository or folder (its config has timm's ``architecture`` key)."""
    config = read_config(path)
    if config is None or not isinstance(config.get("architecture"), str):
        return None
    return {"name": f"hf-hub:{path}" if not Path(path).expanduser().is_dir() else f"local-dir:{path}"}
