"""The arguments each backend accepts, turned from a model spec's untyped values into typed classes once.

Values may arrive typed (TOML model files) or as strings (``hf[path=...,batch_size=4]``), so each
is coerced by its field's declared type; anything else is a :class:`BackendArgumentError` that
names the backend, the key and the accepted keys.
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin

import attrs
from attrs import field, frozen, validators

from mill.core.backend import BackendArgs
from mill.core.errors import BackendArgumentError

DTYPES = ("bfloat16", "float16", "float32")

_positive = validators.optional(validators.gt(0))


@frozen
class HfArgs:
    """Arguments of the transformers backend (``hf``, ``huggingface``, ``transformers``).

    ``device``, ``batch_size`` and ``num_workers`` (data loader processes) left unset fall back
    to the run's settings, then to ``cuda`` when available (else ``cpu``), 8 and 0.
    ``min_pixels``/``max_pixels`` bound the image size the processor resizes to, on processors
    that have these settings (Qwen-VL family).
    """

    path: str
    dtype: str = field(default="bfloat16", validator=validators.in_(DTYPES))
    device: str | None = None
    device_map: str | None = None
    batch_size: int | None = field(default=None, validator=_positive)
    num_workers: int | None = field(default=None, validator=validators.optional(validators.ge(0)))
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    min_pixels: int | None = field(default=None, validator=_positive)
    max_pixels: int | None = field(default=None, validator=_positive)


@frozen
class VllmArgs:
    """Arguments of the vLLM backend (``vllm``).

    ``chunk_size`` is how many requests go to the engine per call: large enough for vLLM to
    batch them well, small enough that the decoded images of one chunk fit in host memory.
    ``min_pixels``/``max_pixels`` reach the model's processor as ``mm_processor_kwargs``.
    ``num_workers`` (data loader processes) left unset falls back to the run's setting, then 0.
    ``enforce_eager`` skips vLLM's torch.compile and CUDA graph capture: the engine starts in
    seconds instead of minutes and generates more slowly, which suits small runs and CPU builds.
    """

    path: str
    dtype: str = field(default="bfloat16", validator=validators.in_(DTYPES))
    tensor_parallel_size: int = field(default=1, validator=validators.gt(0))
    data_parallel_size: int = field(default=1, validator=validators.gt(0))
    gpu_memory_utilization: float = field(default=0.9, validator=[validators.gt(0.0), validators.le(1.0)])
    max_model_len: int | None = field(default=None, validator=_positive)
    limit_mm_per_prompt: Mapping[str, int] = field(factory=lambda: {"image": 1})
    revision: str | None = None
    trust_remote_code: bool = False
    max_num_seqs: int | None = field(default=None, validator=_positive)
    enforce_eager: bool = False
    min_pixels: int | None = field(default=None, validator=_positive)
    max_pixels: int | None = field(default=None, validator=_positive)
    chunk_size: int = field(default=1024, validator=validators.gt(0))
    num_workers: int | None = field(default=None, validator=validators.optional(validators.ge(0)))


ArgsT = TypeVar("ArgsT", HfArgs, VllmArgs)
T = TypeVar("T")


def parse_args(cls: type[ArgsT], raw: BackendArgs, backend: str) -> ArgsT:
    """Build ``cls`` from a model spec's arguments for ``backend``.

    Raises :class:`BackendArgumentError` for an unknown key, a missing ``path``, or a value
    that cannot be converted to its field's type or is out of range.
    """
    fields = attrs.fields_dict(attrs.resolve_types(cls))
    accepted = ", ".join(fields)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise BackendArgumentError(
            f"backend {backend!r} does not accept argument(s) {', '.join(unknown)}; accepted: {accepted}"
        )
    if "path" not in raw:
        raise BackendArgumentError(
            f"backend {backend!r} needs a model: pass path=<local directory or Hugging Face Hub id>, "
            f"e.g. {backend}[path=Qwen/Qwen2-VL-2B-Instruct]"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            values[key] = _coerce(value, fields[key].type)
        except (TypeError, ValueError) as error:
            raise BackendArgumentError(f"backend {backend!r}, argument {key}={value!r}: {error}") from None
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise BackendArgumentError(f"backend {backend!r}: invalid argument value: {error}") from None


def _coerce(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (str, int, float, bool, an optional of these, or a str->int mapping)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        (inner,) = (arg for arg in get_args(annotation) if arg is not type(None))
        return _coerce(value, inner)
    if annotation is bool:
        return _to_bool(value)
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected an integer")
        return int(value)
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str | int | os.PathLike):
            raise ValueError("expected a string")
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if origin is Mapping:
        return _to_count_mapping(value)
    raise TypeError(f"no conversion to {annotation!r}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


def _to_count_mapping(value: Any) -> dict[str, int]:
    """A modality -> count mapping from a dict, JSON text, or ``image=1;video=0`` text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            value = dict(item.split("=", 1) for item in text.split(";") if item.strip())
    if not isinstance(value, Mapping):
        raise ValueError('expected a mapping such as {"image": 1} or image=1')
    return {str(key).strip(): _coerce(count, int) for key, count in value.items()}


def resolved(args: HfArgs | VllmArgs, **overrides: Any) -> dict[str, Any]:
    """Every argument after defaults (and run-level ``overrides``), for the manifest."""
    values = attrs.asdict(args)
    values.update(overrides)
    return values


def output_settings(args: HfArgs | VllmArgs) -> dict[str, str]:
    """The arguments that change a model's answers, as recorded in :class:`ModelInfo` settings."""
    settings = {"dtype": args.dtype}
    for name in ("min_pixels", "max_pixels"):
        value = getattr(args, name)
        if value is not None:
            settings[name] = str(value)
    return settings


def run_setting(spec_value: T | None, context_value: T | None, default: T) -> T:
    """The model spec's value, else the run's (CLI flag), else ``default``; 0 counts as set."""
    if spec_value is not None:
        return spec_value
    return context_value if context_value is not None else default
