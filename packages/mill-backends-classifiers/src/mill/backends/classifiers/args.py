"""The classifier backends' arguments: parsed once from the model spec into validated values.

Imports no ML framework: the plugins parse arguments to answer ``capabilities`` cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from attrs import evolve, frozen

from mill.core.arguments import NonNegativeInt, PositiveInt, structure_arguments
from mill.core.backend import RunContext
from mill.core.errors import BackendArgumentError, ModelNotFoundError
from mill.core.precision import PRECISIONS, DtypeName, Precision, PrecisionName, checked_precision

#: timm's validate.py runs in float32 unless told ``--amp``: the numbers to reproduce are fp32 numbers.
DEFAULT_PRECISION: PrecisionName = "fp32"
CropMode = Literal["center", "squash", "border"]
Interpolation = Literal["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"]


@frozen
class RunArgs:
    """What every classifier backend takes besides the model: ``device``, ``batch_size`` and ``num_workers``
    are None until :meth:`resolve` fills them from the run context and the machine."""

    precision: Precision = PRECISIONS[DEFAULT_PRECISION]
    device: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None

    def resolve(self, context: RunContext, *, cuda_available: bool) -> RunArgs:
        device, batch_size, num_workers = context.resolve(
            self.device, self.batch_size, self.num_workers, cuda_available=cuda_available
        )
        return evolve(self, device=device, batch_size=batch_size, num_workers=num_workers)

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision.name,
            "device": self.device,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
        }


@frozen(kw_only=True)
class _RunInput:
    """The arguments every classifier takes, as a model spec gives them: ``dtype`` is shorthand for a precision."""

    precision: PrecisionName | None = None
    dtype: DtypeName | None = None
    device: str | None = None
    batch_size: PositiveInt | None = None
    num_workers: NonNegativeInt | None = None


@frozen(kw_only=True)
class _TimmInput(_RunInput):
    name: str
    pretrained: bool = True
    checkpoint: str | None = None
    img_size: PositiveInt | None = None
    crop_pct: float | None = None
    crop_mode: CropMode | None = None
    interpolation: Interpolation | None = None
    mean: str | None = None
    std: str | None = None


@frozen(kw_only=True)
class _TorchvisionInput(_RunInput):
    name: str
    weights: str
    checkpoint: str | None = None


@frozen(kw_only=True)
class _TransformersInput(_RunInput):
    path: str
    revision: str | None = None


_Input = TypeVar("_Input", _TimmInput, _TorchvisionInput, _TransformersInput)


def _parse(
    args: Mapping[str, Any], cls: type[_Input], backend: str, hints: Mapping[str, str]
) -> tuple[_Input, RunArgs]:
    # A TOML model file may give mean/std as lists; the spec-string form is "0.5,0.5,0.5".
    raw = {k: ",".join(map(str, v)) if isinstance(v, list | tuple) else v for k, v in args.items()}
    given = structure_arguments(raw, cls, backend, hints=hints)
    run = RunArgs(
        precision=checked_precision(
            given.precision or (None if given.dtype else DEFAULT_PRECISION), given.dtype, backend
        ),
        device=given.device,
        batch_size=given.batch_size,
        num_workers=given.num_workers,
    )
    return given, run


def _checkpoint(value: str | None, backend: str) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"{backend} backend: checkpoint={value} does not exist; give a weights file")
    return path


def _triple(value: str | None, key: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(part) for part in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3:
        raise BackendArgumentError(f"timm backend: {key}={value!r} must be three numbers, e.g. {key}=0.5,0.5,0.5")
    return numbers[0], numbers[1], numbers[2]


@frozen
class TimmArgs:
    """``name`` is a timm model name with its pretrained tag (``resnet50.a1_in1k``) or ``hf-hub:ORG/REPO``;
    ``checkpoint`` a local weights file loaded into that architecture (instead of the pretrained weights);
    ``pretrained=false`` random weights. The preprocessing overrides (None: the model's pretrained config)
    are what timm's ``resolve_data_config`` reads."""

    name: str
    run: RunArgs
    pretrained: bool = True
    checkpoint: Path | None = None
    img_size: int | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> TimmArgs:
        """Raises BackendArgumentError naming the bad argument, ModelNotFoundError for a missing checkpoint."""
        hints = {"name": "give a timm model such as name=resnet50.a1_in1k, or name=hf-hub:timm/resnet50.a1_in1k"}
        given, run = _parse(args, _TimmInput, "timm", hints)
        return cls(
            name=given.name,
            run=run,
            pretrained=given.pretrained,
            checkpoint=_checkpoint(given.checkpoint, "timm"),
            img_size=given.img_size,
            crop_pct=given.crop_pct,
            crop_mode=given.crop_mode,
            interpolation=given.interpolation,
            mean=_triple(given.mean, "mean"),
            std=_triple(given.std, "std"),
        )

    def data_overrides(self) -> dict[str, Any]:
        """The arguments ``timm.data.resolve_data_config`` reads, as validate.py passes its command line."""
        return {
            "img_size": self.img_size,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
        }

    def as_dict(self) -> dict[str, Any]:
        checkpoint = None if self.checkpoint is None else str(self.checkpoint)
        model = {"name": self.name, "pretrained": self.pretrained, "checkpoint": checkpoint}
        return {**model, **self.data_overrides(), **self.run.as_dict()}


@frozen
class TorchvisionArgs:
    """``name`` is a torchvision model builder (``resnet50``), ``weights`` its weights enum member
    (``IMAGENET1K_V2``, ``DEFAULT``): they give the preprocessing, and the weights unless ``checkpoint`` names a
    local state-dict file to load instead."""

    name: str
    weights: str
    run: RunArgs
    checkpoint: Path | None = None

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> TorchvisionArgs:
        hints = {
            "name": "give a torchvision model builder such as name=resnet50",
            "weights": "the weights decide the preprocessing: give e.g. weights=IMAGENET1K_V2 (or DEFAULT)",
        }
        given, run = _parse(args, _TorchvisionInput, "torchvision", hints)
        return cls(given.name, given.weights, run, _checkpoint(given.checkpoint, "torchvision"))

    def as_dict(self) -> dict[str, Any]:
        checkpoint = None if self.checkpoint is None else str(self.checkpoint)
        return {"name": self.name, "weights": self.weights, "checkpoint": checkpoint, **self.run.as_dict()}


@frozen
class TransformersArgs:
    """``path`` is a Hugging Face Hub id or a folder written by ``save_pretrained`` holding an image
    classifier (``AutoModelForImageClassification``) and its image processor."""

    path: str
    run: RunArgs
    revision: str | None = None

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> TransformersArgs:
        hints = {"path": "give a Hub id such as google/vit-base-patch16-224, or a save_pretrained folder"}
        given, run = _parse(args, _TransformersInput, "hf_classifier", hints)
        return cls(given.path, run, given.revision)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "revision": self.revision, **self.run.as_dict()}
