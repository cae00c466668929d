"""A transformers vision-language model held in memory as a Mill backend (a notebook's, a fine-tuning loop's).

    backend = from_model(model, processor, name="qwen-ft/step-500")
    result = mill.core.evaluate(backend, "imagenet_mcq", output_dir=None, limit=500)

The identity is ``name`` (default: the model's architecture followed by ``/in-memory``) and the revision a
content hash of its parameters. The model answers on its own device, in its own dtype, and is left as it
was found (train/eval mode, device, ``requires_grad``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import version
from typing import Any

from attrs import frozen

from mill.backends.llm.hf import DEFAULT_BATCH_SIZE, HfBackend
from mill.core.backend import Backend, Capabilities, ModelInfo, RunContext
from mill.core.held_model import first_device, parameters_digest, preserved
from mill.core.kinds import generative_mcq
from mill.core.kinds.generative_mcq import McqBatchResult, McqTask
from mill.core.sample import SampleSource

DISTRIBUTION = "mill-backends-llm"


@frozen
class InMemoryVlm:
    """A backend plugin for one in-memory transformers VLM and its processor (see :func:`from_model`)."""

    model: Any
    processor: Any
    name: str
    distribution: str = DISTRIBUTION

    def capabilities(self, args: Mapping[str, Any]) -> Capabilities:
        del args
        return Capabilities(kinds=frozenset({generative_mcq.NAME}), modalities=frozenset({"image", "text"}))

    def load(self, args: Mapping[str, Any], context: RunContext) -> Backend:
        del args
        return InMemoryHfBackend.wrap(self, context)


def from_model(model: Any, processor: Any, *, name: str | None = None) -> InMemoryVlm:
    """A backend for ``model`` (a transformers image-text-to-text model) and its ``processor``, for
    :func:`mill.core.evaluate`."""
    architectures = getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__]
    return InMemoryVlm(model, processor, name or f"{architectures[0]}/in-memory")


class InMemoryHfBackend(HfBackend):
    """An :class:`HfBackend` over a model the caller holds; restores the model after each run."""

    def __init__(self, held: InMemoryVlm, info: ModelInfo, *, device: str, context: RunContext) -> None:
        batch_size = int(info.resolved_args["batch_size"])
        num_workers = int(info.resolved_args["num_workers"])
        super().__init__(
            held.model, held.processor, info, batch_size=batch_size, num_workers=num_workers, context=context
        )
        self._device = device

    @classmethod
    def wrap(cls, held: InMemoryVlm, context: RunContext) -> InMemoryHfBackend:
        model = held.model
        device = context.device or first_device(model)
        batch_size = context.batch_size or DEFAULT_BATCH_SIZE
        num_workers = context.num_workers or 0
        dtype = str(getattr(model, "dtype", "unknown")).removeprefix("torch.")
        info = ModelInfo(
            identity=held.name,
            settings={"dtype": dtype},
            resolved_args={
                "name": held.name,
                "dtype": dtype,
                "device": device,
                "batch_size": batch_size,
                "num_workers": num_workers,
                "in_memory": True,
            },
            revision=parameters_digest(model),
            library_versions={"transformers": version("transformers"), "torch": version("torch")},
            device_type=device.split(":")[0],
        )
        return cls(held, info, device=device, context=context)

    def run_mcq(self, task: McqTask, data: SampleSource) -> Iterator[McqBatchResult]:
        tokenizer = self._processor.tokenizer
        padding_side = tokenizer.padding_side
        with preserved(self._model):
            self._model.to(self._device).eval()
            # Generation appends to the right end of each row, so padding must sit on the left (as the hf
            # backend's own loading sets it); the caller's processor gets its own side back.
            tokenizer.padding_side = "left"
            try:
                yield from super().run_mcq(task, data)
            finally:
                tokenizer.padding_side = padding_side
