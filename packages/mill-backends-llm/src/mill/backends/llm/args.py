"""The arguments each backend accepts, structured from a model spec's untyped values into typed classes once.

Values may arrive typed (TOML model files) or as text (``hf[path=...,batch_size=4]``); the converter of
:mod:`mill.core.arguments` takes each field's type and its text form, so a mistake is a
:class:`BackendArgumentError` naming the backend, the argument and what it expected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import attrs
from attrs import field, frozen

from mill.core.arguments import NonNegativeInt, PositiveInt, make_argument_converter, structure_arguments
from mill.core.backend import BackendArgs
from mill.core.convert import UnexpectedValue

Dtype = Literal["bfloat16", "float16", "float32"]
#: A share of the GPU's memory, in (0, 1].
MemoryFraction = Annotated[float, "a share of GPU memory"]


@frozen
class HfArgs:
    """Arguments of the transformers backend (``hf``, ``huggingface``, ``transformers``).

    ``device``, ``batch_size`` and ``num_workers`` (data loader processes) left unset fall back
    to the run's settings, then to ``cuda`` when available (else ``cpu``), 8 and 0.
    ``min_pixels``/``max_pixels`` bound the image size the processor resizes to, on processors
    that have these settings (Qwen-VL family).
    """

    path: str
    dtype: Dtype = "bfloat16"
    device: str | None = None
    device_map: str | None = None
    batch_size: PositiveInt | None = None
    num_workers: NonNegativeInt | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    min_pixels: PositiveInt | None = None
    max_pixels: PositiveInt | None = None


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
    dtype: Dtype = "bfloat16"
    tensor_parallel_size: PositiveInt = 1
    data_parallel_size: PositiveInt = 1
    gpu_memory_utilization: MemoryFraction = 0.9
    max_model_len: PositiveInt | None = None
    limit_mm_per_prompt: Mapping[str, NonNegativeInt] = field(factory=lambda: {"image": 1})
    revision: str | None = None
    trust_remote_code: bool = False
    max_num_seqs: PositiveInt | None = None
    enforce_eager: bool = False
    min_pixels: PositiveInt | None = None
    max_pixels: PositiveInt | None = None
    chunk_size: PositiveInt = 1024
    num_workers: NonNegativeInt | None = None


#: Seconds, > 0.
Seconds = Annotated[float, "seconds"]
#: US dollars per million tokens, >= 0.
Price = Annotated[float, "a price per million tokens"]


@frozen
class OpenAIArgs:
    """Arguments of the OpenAI-compatible endpoint backend (``openai``).

    ``model`` is the name the endpoint serves; ``base_url`` the endpoint (unset: OpenAI's own API, a hosted
    model). ``api_key_env`` names the environment variable holding the key; the key itself is never an
    argument, so it cannot reach a manifest, a log line or an error. ``concurrency`` requests are in flight at
    once, taken ``batch_size`` samples at a time from the loader (unset: the run's ``--batch_size``, else
    4 x concurrency). A request that times
    out (``timeout`` seconds), is throttled (429), fails on the server (5xx) or loses its connection is sent
    again up to ``max_retries`` times. ``temperature`` and ``seed`` go with every request. ``tokenizer`` (a
    local directory or hub id; unset: the weights the server reports) renders letter-likelihood prompts.
    ``price_input``/``price_output`` (per million tokens) turn token counts into a cost in the manifest.
    ``token_ids`` asks a vLLM server to report each prompt's token ids (vLLM's ``return_token_ids``), kept with
    the answers in the run's journal; letter-likelihood requests always ask for them.
    """

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: PositiveInt = 8
    batch_size: PositiveInt | None = None
    timeout: Seconds = 120.0
    max_retries: NonNegativeInt = 8
    temperature: float = 0.0
    seed: int | None = None
    tokenizer: str | None = None
    price_input: Price | None = None
    price_output: Price | None = None
    token_ids: bool = False
    num_workers: NonNegativeInt | None = None


ArgsT = TypeVar("ArgsT", HfArgs, VllmArgs, OpenAIArgs)
T = TypeVar("T")

_COUNTS_EXPECTED = 'a mapping of modality to count such as {"image": 1}, or image=1;video=0'


def _to_fraction(value: Any, _: Any) -> float:
    number = CONVERTER.structure(value, float)
    if not 0.0 < number <= 1.0:
        raise UnexpectedValue("a number in (0, 1]", value)
    return number


def _to_seconds(value: Any, _: Any) -> float:
    number = CONVERTER.structure(value, float)
    if not number > 0.0:
        raise UnexpectedValue("a number of seconds > 0", value)
    return number


def _to_price(value: Any, _: Any) -> float:
    number = CONVERTER.structure(value, float)
    if not number >= 0.0:
        raise UnexpectedValue("a price per million tokens >= 0", value)
    return number


def _to_counts(value: Any, _: Any) -> dict[str, int]:
    """A modality -> count mapping from a table, JSON text, or ``image=1;video=0`` text."""
    items: Any = value
    if isinstance(value, str):
        text = value.strip()
        try:
            items = json.loads(text) if text.startswith("{") else dict(i.split("=", 1) for i in text.split(";") if i)
        except ValueError:
            raise UnexpectedValue(_COUNTS_EXPECTED, value) from None
    if not isinstance(items, Mapping):
        raise UnexpectedValue(_COUNTS_EXPECTED, value)
    try:
        return {str(k).strip(): CONVERTER.structure(n, NonNegativeInt) for k, n in items.items()}
    except UnexpectedValue:
        raise UnexpectedValue(_COUNTS_EXPECTED, value) from None


CONVERTER = make_argument_converter()
CONVERTER.register_structure_hook_func(lambda t: t == MemoryFraction, _to_fraction)
CONVERTER.register_structure_hook_func(lambda t: t == Mapping[str, NonNegativeInt], _to_counts)
CONVERTER.register_structure_hook_func(lambda t: t == Seconds, _to_seconds)
CONVERTER.register_structure_hook_func(lambda t: t == Price, _to_price)
_PATH_HINT = "pass path=<local directory or Hugging Face Hub id>, e.g. {backend}[path=Qwen/Qwen2-VL-2B-Instruct]"
_MODEL_HINT = (
    "pass model=<the name the endpoint serves>, e.g. {backend}[model=gpt-4o] or "
    "{backend}[model=Qwen/Qwen3-VL-2B-Instruct,base_url=http://127.0.0.1:8000/v1]"
)


def parse_args(cls: type[ArgsT], raw: BackendArgs, backend: str) -> ArgsT:
    """Build ``cls`` from a model spec's arguments for ``backend``.

    Raises :class:`BackendArgumentError` for an unknown key, a missing ``path``, or a value
    that is not of its field's type or is out of range.
    """
    hints = {"path": _PATH_HINT.format(backend=backend), "model": _MODEL_HINT.format(backend=backend)}
    return structure_arguments(raw, cls, backend, converter=CONVERTER, hints=hints)


def resolved(args: HfArgs | VllmArgs | OpenAIArgs, **overrides: Any) -> dict[str, Any]:
    """Every argument after defaults (and run-level ``overrides``), for the manifest."""
    values = attrs.asdict(args)
    values.update(overrides)
    return values


def output_settings(args: HfArgs | VllmArgs) -> dict[str, str]:
    """The arguments that change a model's answers, as recorded in :class:`ModelInfo` settings."""
    settings: dict[str, str] = {"dtype": args.dtype}
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
