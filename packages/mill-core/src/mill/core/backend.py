"""The backend interface: what an entry point in the ``mill.backends`` group provides.

Registration must be cheap (inspect_ai's pattern): the entry point resolves to a light
:class:`BackendPlugin` whose module imports no ML framework; ``load`` imports the heavy code.
``capabilities`` answers without loading weights, so a model that can serve no variant is
rejected before anything expensive happens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from attrs import field, frozen

from mill.core.progress import Progress, SilentProgress

BackendArgs = Mapping[str, Any]


@frozen
class Capabilities:
    """Which task kinds (by name, e.g. ``zero_shot``) a model can serve and which input modalities it accepts.

    ``n_outputs`` is the number of classes a classifier's head scores, when its config says so without loading
    weights (None: not a fixed-head classifier, or not known before loading); a benchmark whose classifiers must
    score another number of classes (:attr:`mill.core.spec.Spec.n_outputs`) is refused before anything loads.
    """

    kinds: frozenset[str]
    modalities: frozenset[str] = frozenset({"image", "text"})
    n_outputs: int | None = None

    def serves(self, kind: str) -> bool:
        return kind in self.kinds and "image" in self.modalities


@frozen
class ModelInfo:
    """Identity and provenance of a loaded model, recorded with every result.

    ``identity`` names the model in result tables (clip: ``{path}/{pretrained}``; hf/vllm: the
    path or hub id). ``settings`` holds only arguments that change outputs (precision, dtype,
    max new tokens, ...) and decides which runs are comparable. ``resolved_args`` is every
    argument after defaults, for the manifest. ``default_settings`` is false when a setting
    differs from the backend's default, so result tables can mark such runs. ``cuda_version`` is the
    CUDA version the backend's framework was built with (None without CUDA), for the manifest.
    """

    identity: str
    settings: Mapping[str, str]
    resolved_args: Mapping[str, Any]
    revision: str | None = None
    library_versions: Mapping[str, str] = field(factory=dict)
    device_type: str = "cpu"
    default_settings: bool = True
    cuda_version: str | None = None


#: Image batch size by device type when neither the model spec nor the run context gives one.
DEFAULT_BATCH_SIZE = {"cuda": 256, "cpu": 64}
MAX_DEFAULT_WORKERS = 8


@frozen
class RunContext:
    """Process-wide settings a backend may use. Values written in the model spec win over these.
    ``cache_dir`` None: cache nothing (no classifier, no hashes). ``quiet``: the backend's libraries draw
    nothing either (transformers' loading bar)."""

    cache_dir: Path | None
    device: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    progress: Progress = field(factory=SilentProgress)
    quiet: bool = False

    def resolve(
        self, device: str | None, batch_size: int | None, num_workers: int | None, *, cuda_available: bool
    ) -> tuple[str, int, int]:
        """An image backend's device, batch size and loader workers: the model spec's value, else this
        context's, else a default (CUDA when available, :data:`DEFAULT_BATCH_SIZE`, up to 8 workers)."""
        device = device or self.device or ("cuda" if cuda_available else "cpu")
        default_workers = min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
        return (
            device,
            batch_size or self.batch_size or DEFAULT_BATCH_SIZE.get(device.split(":")[0], 64),
            next(n for n in (num_workers, self.num_workers, default_workers) if n is not None),
        )


@runtime_checkable
class Backend(Protocol):
    """A loaded model. Each task kind it serves adds a protocol of its own (e.g.
    :class:`mill.core.kinds.zero_shot.ZeroShotBackend`), checked with ``isinstance`` once the model is loaded."""

    @property
    def info(self) -> ModelInfo: ...

    def run_info(self) -> Mapping[str, Any]:
        """Facts about the last run for the manifest (e.g. whether a classifier cache was hit)."""
        ...


@runtime_checkable
class ResumableBackend(Backend, Protocol):
    """A backend whose ``run_info`` carries state a resumed run should start from (the batch size it fell
    back to when the device ran out of memory, :mod:`mill.core.batch_size`). The engine records
    ``run_info`` in the run's directory at every commit and, when the run is resumed, calls :meth:`resume`
    with the last record before any sample is computed."""

    def resume(self, previous: Mapping[str, Any]) -> None: ...


@runtime_checkable
class BatchSizedBackend(Backend, Protocol):
    """A backend that batches through :class:`~mill.core.batch_size.AdaptiveBatchSize` and so knows which batch
    size computed each sample (under reduced precision it may change the sample's result, docs/outputs.md). The
    engine calls :meth:`batch_sizes` with the keys of every frame of answers it is handed and keeps them in the
    per-sample ``batch_size`` column."""

    def batch_sizes(self, keys: Sequence[str]) -> list[int | None]: ...


@runtime_checkable
class JournallingBackend(Backend, Protocol):
    """A backend whose answers cost money or time per request (a served or hosted model). Chunks commit every
    ``chunk_size`` samples; between commits such a backend keeps each answered request in an append-only
    journal as it arrives, so a run cut mid-chunk never pays for an answer twice. Before any sample is
    computed the engine calls :meth:`keep_journal` with the journal file of the run's directory
    (:func:`mill.core.chunks.journal_path`), or None when the run keeps nothing on disk; the backend reads what
    the file holds (answers of an interrupted process of this run) and appends to it."""

    def keep_journal(self, path: Path | None) -> None: ...


@runtime_checkable
class BackendPlugin(Protocol):
    """What a ``mill.backends`` entry point resolves to. Its module must import no ML framework.

    The distribution that provides it (whose version enters every run's identity) is read from the
    entry point's metadata, never declared by the plugin.
    """

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
    "BatchSizedBackend",
    "Capabilities",
    "JournallingBackend",
    "ModelInfo",
    "ResumableBackend",
    "RunContext",
]
