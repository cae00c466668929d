"""A classifier held in memory as a Mill backend: a training loop scores the model it is training.

    backend = from_model(model, transform, name="my-run/epoch-3")
    result = mill.core.evaluate(backend, "imagenet", output_dir=None, limit=2000)

``transform`` turns one RGB PIL image into the model's input tensor; without it, a timm model's validation
transform is resolved from its ``pretrained_cfg`` (as timm's validate.py does), and any other model is refused.
The model's identity is ``name`` (default: its class name followed by ``/in-memory``) and its revision a content
hash of its parameters. Evaluating leaves the model as it was found: its train/eval mode, its device and each
parameter's ``requires_grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen

from mill.backends.classifiers.args import DEFAULT_PRECISION
from mill.core.backend import Backend, Capabilities, RunContext
from mill.core.kinds import classification
from mill.core.precision import PrecisionName, in_memory_precision

DISTRIBUTION = "mill-backends-classifiers"


@frozen
class InMemoryClassifier:
    """A backend plugin for one in-memory classifier (see :func:`from_model`)."""

    model: Any
    transform: Callable[[Any], Any] | None
    name: str
    precision: PrecisionName = DEFAULT_PRECISION
    distribution: str = DISTRIBUTION

    def capabilities(self, args: Mapping[str, Any]) -> Capabilities:
        del args
        # timm and torchvision classifiers say their head size; a mismatch is then refused before the run.
        n_outputs = getattr(self.model, "num_classes", None)
        return Capabilities(
            kinds=frozenset({classification.NAME}),
            modalities=frozenset({"image"}),
            n_outputs=n_outputs if isinstance(n_outputs, int) else None,
        )

    def load(self, args: Mapping[str, Any], context: RunContext) -> Backend:
        del args
        from mill.backends.classifiers.backend import InMemoryClassifierBackend

        return InMemoryClassifierBackend.wrap(self, context)


def from_model(
    model: Any,
    transform: Callable[[Any], Any] | None = None,
    *,
    name: str | None = None,
    precision: PrecisionName = DEFAULT_PRECISION,
) -> InMemoryClassifier:
    """A backend for ``model`` (a ``torch.nn.Module`` returning logits) for :func:`mill.core.evaluate`.

    Raises:
        BackendArgumentError: ``precision`` is unknown, or would recast the weights (pure_bf16, pure_fp16:
            evaluate never changes the model it is given).
    """
    in_memory_precision(precision, "classifier")
    return InMemoryClassifier(model, transform, name or f"{type(model).__name__}/in-memory", precision=precision)
