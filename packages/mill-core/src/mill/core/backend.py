"""The backend interface: what an entry point in the ``mill.backends`` group provides.

Registration must be cheap (inspect_ai's pattern): the entry point resolves to a light
:class:`BackendPlugin` whose module imports no ML framework; ``load`` imports the heavy code.
``capabilities`` answers without loading weights, so a model that can serve no variant is
rejected before anything expensive happens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from attrs import field, frozen

from mill.core.progress import Progress, SilentProgress
from mill.core.sample import SampleSource
from mill.core.task import McqBatchResult, McqTask, VariantKind, ZeroShotBatchResult, ZeroShotTask

BackendArgs = Mapping[str, Any]


@frozen
class Capabilities:
    """Which variant kinds a model can serve and which input modalities it accepts."""

    kinds: frozenset[VariantKind]
    modalities: frozenset[str] = frozenset({"image", "text"})

    def serves(self, kind: VariantKind) -> bool:
        return kind in self.kinds and "image" in self.modalities


@frozen
class ModelInfo:
    """Identity and provenance of a loaded model, recorded with every result.

    ``identity`` names the model in result tables (clip: ``{path}/{pretrained}``; hf/vllm: the
    path or hub id). ``settings`` holds only arguments that change outputs (precision, dtype,
    max new tokens, ...) and decides which runs are comparable. ``resolved_args`` is every
    argument after defaults, for the manifest. ``default_settings`` is false when a setting
    differs from the backend's default, so result tables can mark such runs.
    """

    identity: str
    settings: Mapping[str, str]
    resolved_args: Mapping[str, Any]
    revision: str | None = None
    library_versions: Mapping[str, str] = field(factory=dict)
    device_type: str = "cpu"
    default_settings: bool = True


@frozen
class RunContext:
    """Process-wide settings a backend may use. Values written in the model spec win over these."""

    cache_dir: Path
    device: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    progress: Progress = field(factory=SilentProgress)


@runtime_checkable
class Backend(Protocol):
    """A loaded model. Implements the ``run_*`` method of each kind its plugin declares."""

    @property
    def info(self) -> ModelInfo: ...

    def run_info(self) -> Mapping[str, Any]:
        """Facts about the last run for the manifest (e.g. whether a classifier cache was hit)."""
        ...


@runtime_checkable
class ZeroShotBackend(Backend, Protocol):
    def run_zero_shot(self, task: ZeroShotTask, data: SampleSource) -> Iterator[ZeroShotBatchResult]: ...


@runtime_checkable
class McqBackend(Backend, Protocol):
    def run_mcq(self, task: McqTask, data: SampleSource) -> Iterator[McqBatchResult]: ...


class BackendPlugin(Protocol):
    """What a ``mill.backends`` entry point resolves to. Its module must import no ML framework."""

    @property
    def distribution(self) -> str:
        """The distribution that provides this backend, e.g. ``mill-backends-clip``."""
        ...

    def capabilities(self, args: BackendArgs) -> Capabilities:
        """What the model described by ``args`` can serve, decided without loading weights.

        Raises :class:`mill.core.errors.ModelNotFoundError` when ``args`` name no model.
        """
        ...

    def load(self, args: BackendArgs, context: RunContext) -> Backend:
        """Load the model. Raises a :class:`mill.core.errors.MillError` subclass on bad args."""
        ...


__all__ = [
    "Backend",
    "BackendArgs",
    "BackendPlugin",
    "Capabilities",
    "McqBackend",
    "ModelInfo",
    "RunContext",
    "ZeroShotBackend",
]
