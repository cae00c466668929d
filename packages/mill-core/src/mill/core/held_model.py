"""What evaluating a model held in memory (a training loop's, a notebook's) must guarantee, whatever its
framework: an identity for its weights, and leaving it as it was found.

Duck-typed over ``torch.nn.Module`` (``state_dict``, ``named_parameters``, ``training``, ``to``,
``train``), so mill-core needs no ML framework to state it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def parameters_digest(model: Any) -> str:
    """``sha256:`` over every parameter and buffer (name, dtype, shape, bytes) in name order: the weights'
    identity, the same however the model was built or wherever it lives."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        # A clone owns a compact storage, so its bytes are exactly the tensor's (a view's storage is not).
        value = tensor.detach().cpu().clone().contiguous()
        digest.update(f"{key}\0{value.dtype}\0{tuple(value.shape)}\0".encode())
        digest.update(bytes(value.untyped_storage()))
    return f"sha256:{digest.hexdigest()}"


def first_device(model: Any, default: str = "cpu") -> str:
    """The device of ``model``'s first parameter (where the caller keeps it)."""
    return next((str(parameter.device) for parameter in model.parameters()), default)


@contextmanager
def preserved(model: Any) -> Iterator[None]:
    """Restore ``model``'s train/eval mode, device and each parameter's ``requires_grad`` on exit."""
    training = bool(model.training)
    grads = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    device = next((parameter.device for parameter in model.parameters()), None)
    try:
        yield
    finally:
        if device is not None:
            model.to(device)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(grads[name])
        model.train(training)
