"""An open_clip model held in memory as a Mill backend: a training loop scores the model it is training.

    backend = from_model(model, preprocess, tokenizer, name="my-run/epoch-3")
    result = mill.core.evaluate(backend, "imagenet", output_dir=None, limit=2000)

The model's identity is ``name`` (default: its class name followed by ``/in-memory``) and its revision a
content hash of its parameters, so a result never stands for other weights. The classifier is not cached
unless asked for (weights change between calls). Evaluating leaves the model as it was found: its
train/eval mode, its device and each parameter's ``requires_grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen

from mill.backends.clip.plugin import CAPABILITIES
from mill.core.backend import Backend, Capabilities, RunContext
from mill.core.precision import DEFAULT_PRECISION, PrecisionName, in_memory_precision

DISTRIBUTION = "mill-backends-clip"


@frozen
class InMemoryClip:
    """A backend plugin for one in-memory open_clip model (see :func:`from_model`)."""

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[list[str]], Any]
    name: str
    precision: PrecisionName = DEFAULT_PRECISION
    cache_classifier: bool = False
    distribution: str = DISTRIBUTION

    def capabilities(self, args: Mapping[str, Any]) -> Capabilities:
        del args
        return CAPABILITIES

    def load(self, args: Mapping[str, Any], context: RunContext) -> Backend:
        del args
        from mill.backends.clip.backend import InMemoryClipBackend

        return InMemoryClipBackend.wrap(self, context)


def from_model(
    model: Any,
    preprocess: Callable[[Any], Any],
    tokenizer: Callable[[list[str]], Any],
    *,
    name: str | None = None,
    precision: PrecisionName = DEFAULT_PRECISION,
    cache_classifier: bool = False,
) -> InMemoryClip:
    """A backend for ``model`` (an open_clip model), its ``preprocess`` transform and its ``tokenizer``,
    for :func:`mill.core.evaluate`.

    Raises:
        BackendArgumentError: ``precision`` is unknown, or would recast the weights (pure_bf16, pure_fp16:
            evaluate never changes the model it is given).
    """
    in_memory_precision(precision, "clip")
    return InMemoryClip(
        model,
        preprocess,
        tokenizer,
        name or f"{type(model).__name__}/in-memory",
        precision=precision,
        cache_classifier=cache_classifier,
    )
