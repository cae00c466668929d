"""The precisions an image model (a CLIP model, a classifier) can run in, in open_clip's vocabulary, and what each
means in torch terms. Shared by the clip and classifier backends, so ``precision=`` reads the same in both.

Kept free of torch (dtypes are named, not imported) so argument parsing stays light.
"""

from __future__ import annotations

from typing import Literal

from attrs import frozen

from mill.core.errors import BackendArgumentError

#: open_clip's precision names; the argument parser offers them in this order.
PrecisionName = Literal["amp_bf16", "amp", "fp32", "pure_bf16", "pure_fp16"]
#: The hf backend's ``dtype=`` names, accepted as shorthand for a precision.
DtypeName = Literal["bfloat16", "float16", "float32"]


@frozen
class Precision:
    """How weights are stored and how the forward pass is cast.

    ``model_precision`` is what ``open_clip.create_model`` is given (``pure_*``: weights cast to that dtype;
    ``fp32``: kept in float32); ``autocast_dtype`` is the
    ``torch.autocast`` dtype (None: no autocast); ``input_dtype`` is the dtype images are cast to
    before the image tower runs (pure low-precision weights need low-precision inputs).
    """

    name: PrecisionName
    model_precision: str
    autocast_dtype: str | None
    input_dtype: str


PRECISIONS: dict[PrecisionName, Precision] = {
    p.name: p
    for p in (
        Precision("amp_bf16", model_precision="fp32", autocast_dtype="bfloat16", input_dtype="float32"),
        Precision("amp", model_precision="fp32", autocast_dtype="float16", input_dtype="float32"),
        Precision("fp32", model_precision="fp32", autocast_dtype=None, input_dtype="float32"),
        Precision("pure_bf16", model_precision="pure_bf16", autocast_dtype=None, input_dtype="bfloat16"),
        Precision("pure_fp16", model_precision="pure_fp16", autocast_dtype=None, input_dtype="float16"),
    )
}

DEFAULT_PRECISION: PrecisionName = "amp_bf16"

#: ``dtype=`` shorthand accepted for users coming from the hf backend.
DTYPE_PRECISIONS: dict[DtypeName, PrecisionName] = {"bfloat16": "amp_bf16", "float16": "amp", "float32": "fp32"}


def checked_precision(precision: PrecisionName | None, dtype: DtypeName | None, backend: str) -> Precision:
    """The precision named by ``precision`` or its ``dtype`` shorthand (default: :data:`DEFAULT_PRECISION`).

    Raises:
        BackendArgumentError: the two are given and disagree.
    """
    if dtype is None:
        return PRECISIONS[precision or DEFAULT_PRECISION]
    implied = DTYPE_PRECISIONS[dtype]
    if precision is not None and precision != implied:
        raise BackendArgumentError(
            f"{backend} backend: dtype={dtype!r} means precision={implied!r}, which "
            f"contradicts precision={precision!r}; give only one of them"
        )
    return PRECISIONS[implied]


def in_memory_precision(precision: str, backend: str) -> None:
    """Check ``precision`` for a model the caller holds: it must leave the model's float32 weights as they are.

    Raises:
        BackendArgumentError: ``precision`` is unknown, or would recast the weights (pure_bf16, pure_fp16:
            evaluate never changes the model it is given).
    """
    allowed = [name for name, value in PRECISIONS.items() if value.model_precision == "fp32"]
    if precision not in allowed:
        raise BackendArgumentError(
            f"{backend} backend: precision={precision!r} for an in-memory model; expected one of {', '.join(allowed)} "
            "(pure low-precision modes would recast the model's own weights)"
        )
