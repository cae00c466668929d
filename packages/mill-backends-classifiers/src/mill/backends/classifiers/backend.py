"""The loaded classifier backend: every image through the model's head, its logits ranked over the benchmark.

A subset benchmark keeps only its classes' logits; a benchmark whose classes gather several outputs scores each
class by their maximum (:func:`class_scores`). Batches that run out of device memory are computed again at half
the size (:mod:`mill.core.batch_size`); logits that are not finite stop the run instead of producing a silently
wrong accuracy; a head with another number of outputs than the task's is refused at the first batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch

from mill.backends.classifiers.args import RunArgs
from mill.backends.classifiers.families import LoadedClassifier, device_of, library_versions, prepared, timm_transform
from mill.core.backend import ModelInfo, RunContext
from mill.core.batch_size import AdaptiveBatchSize
from mill.core.errors import BackendArgumentError, CapabilityError
from mill.core.held_model import first_device, parameters_digest, preserved
from mill.core.image_batches import answer_batches, topk_result
from mill.core.kinds.classification import ClassificationBatchResult, ClassificationTask
from mill.core.precision import PRECISIONS, PrecisionName
from mill.core.sample import SampleBatch, SampleSource


class _ParsedArgs(Protocol):
    @property
    def run(self) -> RunArgs: ...


def class_scores(logits: torch.Tensor, parent_classes: tuple[tuple[int, ...], ...] | None) -> torch.Tensor:
    """Per benchmark class, the maximum logit of the outputs that score it (``[n, n_classes]``); ``logits`` as they
    are when ``parent_classes`` is None. One output per class is a restriction to the subset (timm's A/R results);
    several are Taori et al.'s ``project_logits`` (ObjectNet)."""
    if parent_classes is None:
        return logits
    outputs = [index for indices in parent_classes for index in indices]
    columns = logits[:, torch.tensor(outputs, device=logits.device)]
    if len(outputs) == len(parent_classes):
        return columns
    owner = torch.tensor([c for c, indices in enumerate(parent_classes) for _ in indices], device=logits.device)
    scores = torch.full((logits.shape[0], len(parent_classes)), -torch.inf, dtype=logits.dtype, device=logits.device)
    return scores.scatter_reduce(1, owner.expand(logits.shape[0], -1), columns, reduce="amax")


class ClassifierBackend:
    """A loaded classifier serving classification tasks. Build with :meth:`load`."""

    def __init__(self, loaded: LoadedClassifier, run: RunArgs, context: RunContext) -> None:
        self.loaded = loaded
        self.run = run
        self.context = context
        self.device = device_of(run)
        self._batch = AdaptiveBatchSize(run.batch_size or 1, release=_release_device_memory, name="image batch")

    @classmethod
    def load(
        cls, args: _ParsedArgs, loader: Callable[[Any, RunArgs], LoadedClassifier], context: RunContext
    ) -> ClassifierBackend:
        """Resolve the run arguments against ``context`` and load (progress phase "loading model")."""
        run = args.run.resolve(context, cuda_available=torch.cuda.is_available())
        context.progress.start("loading model")
        try:
            loaded = loader(args, run)
        finally:
            context.progress.finish()
        return cls(loaded, run, context)

    def for_next_run(self) -> ClassifierBackend:
        """Another run's backend over the same loaded model, with a fresh batch size (a suite's members share
        one load, :mod:`mill.core.model_loads`)."""
        return type(self)(self.loaded, self.run, self.context)

    @property
    def info(self) -> ModelInfo:
        return self.loaded.info

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def transform(self) -> Callable[[Any], Any]:
        return self.loaded.transform

    def run_info(self) -> Mapping[str, Any]:
        """The image batch size now and its out-of-memory fall-backs."""
        return self._batch.run_info()

    def resume(self, previous: Mapping[str, Any]) -> None:
        """Start at the batch size an interrupted process of this run fell back to."""
        self._batch.resume(previous)

    def batch_sizes(self, keys: Sequence[str]) -> list[int | None]:
        """The size of the image batch that computed each of ``keys`` (:meth:`AdaptiveBatchSize.take_sizes`)."""
        return self._batch.take_sizes(keys)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits ``[n_images, n_outputs]`` of preprocessed ``images``."""
        images = images.to(
            self.device,
            dtype=getattr(torch, self.run.precision.input_dtype),
            non_blocking=self.device.type == "cuda",
        )
        with torch.inference_mode(), self._autocast():
            return self.loaded.forward(images).float()

    def run_classification(self, task: ClassificationTask, data: SampleSource) -> Iterator[ClassificationBatchResult]:
        """Top-``task.top_k`` classes of every sample in ``data``, one result per batch."""
        k = min(task.top_k, len(task.classnames))
        yield from answer_batches(
            data,
            batch_size=self._batch,
            transform=self.transform,
            num_workers=self.run.num_workers or 0,
            pin_memory=self.device.type == "cuda",
            compute=lambda images: self._topk(images, task, k),
            combine=lambda parts: (torch.cat([topk for topk, _ in parts]), torch.cat([finite for _, finite in parts])),
            collect=self._result,
            progress=self.context.progress,
        )

    def _topk(self, images: torch.Tensor, task: ClassificationTask, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(images)
        if logits.shape[-1] != task.n_outputs:
            raise CapabilityError(
                f"model {self.info.identity!r} scores {logits.shape[-1]} classes, but {task.benchmark} is scored "
                f"over {task.n_outputs}; a classifier trained on another label space cannot be evaluated on it"
            )
        finite = torch.isfinite(logits).all(dim=-1)
        return class_scores(logits, task.parent_classes).topk(k, dim=-1).indices, finite

    def _result(self, batch: SampleBatch, answer: tuple[torch.Tensor, torch.Tensor]) -> ClassificationBatchResult:
        topk, finite = answer
        return topk_result(
            batch,
            topk.cpu().tolist(),
            finite.tolist(),
            what="logits",
            fix=(
                f"the model overflows at precision={self.run.precision.name}: run with precision=fp32, or check these "
                "images"
            ),
            progress=self.context.progress,
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self.run.precision.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, dtype))


class HeldClassifier(Protocol):
    """What :meth:`InMemoryClassifierBackend.wrap` reads of the in-memory plugin
    (:class:`~mill.backends.classifiers.memory.InMemoryClassifier`, which imports this module only when loading)."""

    @property
    def model(self) -> Any: ...

    @property
    def transform(self) -> Callable[[Any], Any] | None: ...

    @property
    def name(self) -> str: ...

    @property
    def precision(self) -> PrecisionName: ...


class InMemoryClassifierBackend(ClassifierBackend):
    """A :class:`ClassifierBackend` over a model the caller holds (:func:`~mill.backends.classifiers.from_model`):
    it runs on the model's own device unless told otherwise, and leaves the model as it found it."""

    @classmethod
    def wrap(cls, held: HeldClassifier, context: RunContext) -> InMemoryClassifierBackend:
        model = held.model
        transform = held.transform
        if transform is None:
            if getattr(model, "pretrained_cfg", None) is None:
                raise BackendArgumentError(
                    f"in-memory model {held.name!r} has no timm pretrained config to resolve its preprocessing "
                    "from; pass transform= (the validation transform that turns a PIL image into its input)"
                )
            transform = timm_transform(model)
        run = RunArgs(precision=PRECISIONS[held.precision], device=context.device or first_device(model))
        run = run.resolve(context, cuda_available=torch.cuda.is_available())
        info = ModelInfo(
            identity=held.name,
            settings={"precision": held.precision},
            resolved_args={**run.as_dict(), "in_memory": True},
            revision=parameters_digest(model),
            library_versions=library_versions("timm"),
            device_type=device_of(run).type,
            default_settings=held.precision == "fp32",
            cuda_version=torch.version.cuda,
        )
        return cls(LoadedClassifier(model, _module_logits(model), transform, info), run, context)

    def run_classification(self, task: ClassificationTask, data: SampleSource) -> Iterator[ClassificationBatchResult]:
        with preserved(self.model):
            prepared(self.model, self.run)
            yield from super().run_classification(task, data)


def _module_logits(model: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` called on an image batch: its output, or the output's ``logits`` (a transformers classifier's)."""

    def forward(images: torch.Tensor) -> torch.Tensor:
        output = model(images)
        return output if isinstance(output, torch.Tensor) else output.logits

    return forward


def _release_device_memory() -> None:
    # What a batch that ran out of memory allocated is cached by torch's allocator, not returned.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
