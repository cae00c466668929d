"""The precisions a CLIP model can run in, in open_clip's vocabulary, and what each means in torch terms.

Kept free of torch (dtypes are named, not imported) so argument parsing stays light.
"""

from __future__ import annotations

from typing import Literal

from attrs import frozen

#: open_clip's precision names; the argument parser offers them in this order.
PrecisionName = Literal["amp_bf16", "amp", "fp32", "pure_bf16", "pure_fp16"]
#: The hf backend's ``dtype=`` names, accepted as shorthand for a precision.
DtypeName = Literal["bfloat16", "float16", "float32"]


@frozen
class Precision:
    """How weights are stored and how the forward pass is cast.

    ``model_precision`` is what ``open_clip.create_model`` is given; ``autocast_dtype`` is the
    ``torch.autocast`` dtype (None: no autocast); ``input_dtype`` is the dtype images are cast to
    before ``encode_image`` (pure low-precision weights need low-precision inputs).
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
