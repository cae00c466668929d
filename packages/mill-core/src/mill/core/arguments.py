"""Backend arguments: a model spec's untyped values structured into a backend's attrs class, once.

The converter is the specs' own (:func:`mill.core.convert.make_converter`), with one addition: a value may
also come as text, because a caller may pass the text of ``backend[key=value,...]`` as it is (TOML model files
and :func:`mill.core.model_spec.parse_value` already give typed values). Each type takes its own text form and
nothing looser: ``'32'`` for an integer, ``true``/``false``/``yes``/``no``/``1``/``0`` for a boolean, ``'0.5'``
for a number, ``none``/``null`` for an optional left unset, a path for a string; an integer is no string (quote
it: ``revision="1234"``). :data:`PositiveInt` and :data:`NonNegativeInt` carry their bound in the type
(:class:`AtLeast`), so a count out of range reads like any other wrong value; no count exceeds
:data:`MAX_COUNT`. :class:`IntRange` checks the run settings that are no backend argument (seed, limit).

Errors are :class:`BackendArgumentError`, one line per problem, worded in the ``key=value`` syntax the user
wrote: ``clip backend: batch_size='many' must be an integer >= 1``.
"""

from __future__ import annotations

import contextlib
import math
import os
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, cast, get_args, get_origin

import attrs
import cattrs

from mill.core.convert import UnexpectedValue, leaf_errors, make_converter
from mill.core.errors import BackendArgumentError

T = TypeVar("T")


#: The largest count (batch size, workers, pixels) Mill accepts: what a 32-bit size holds. A larger one
#: cannot be meant, and would fail deep inside a framework, after the model loaded.
MAX_COUNT = 2**31 - 1


@attrs.frozen
class AtLeast:
    """Marks an ``Annotated[int, AtLeast(n)]`` field: an integer no smaller than ``minimum`` nor larger
    than :data:`MAX_COUNT`."""

    minimum: int


@attrs.frozen
class IntRange:
    """The integers in ``[start, stop)``, ``stop`` written as ``stop_text`` in messages (``2^63``)."""

    start: int
    stop: int
    stop_text: str

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` (None when it is an integer in range)."""
        if isinstance(value, int) and not isinstance(value, bool) and self.start <= value < self.stop:
            return None
        return f"expected an integer in [{self.start}, {self.stop_text}), got {value!r}"


#: Seeds are stored as 64-bit signed integers (aggregate.csv, manifests, parquet).
SEEDS = IntRange(0, 2**63, "2^63")
#: A sample count (``--limit``), stored like a seed.
SAMPLE_COUNTS = IntRange(1, 2**63, "2^63")
#: A count given to a backend (``--batch_size``; ``--num_workers`` starts at 0).
COUNTS = IntRange(1, MAX_COUNT + 1, str(MAX_COUNT + 1))


#: A count that must be at least 1 (a batch size, a parallel degree).
PositiveInt = Annotated[int, AtLeast(1)]
#: A count that may be 0 (data loader workers: 0 loads in the main process).
NonNegativeInt = Annotated[int, AtLeast(0)]

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_UNSET = ("none", "null")


def to_int(value: Any, expected: str = "an integer", minimum: int | None = None) -> int:
    """``value`` (an int, or the text of one) as an int of at least ``minimum``; bool is never a count."""
    number: Any = value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    if not isinstance(number, int) or isinstance(number, bool) or (minimum is not None and number < minimum):
        raise UnexpectedValue(expected, value)
    return number


def _bound(annotation: Any) -> AtLeast | None:
    if get_origin(annotation) is not Annotated:
        return None
    return next((m for m in annotation.__metadata__ if isinstance(m, AtLeast)), None)


def _bounded_int(value: Any, annotation: Any) -> int:
    bound = cast(AtLeast, _bound(annotation))
    number = to_int(value, f"an integer >= {bound.minimum}", bound.minimum)
    if number > MAX_COUNT:
        raise UnexpectedValue(f"an integer <= {MAX_COUNT}", value)
    return number


def _to_bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    # 1 and 0 arrive as ints from a model spec string, where ``compile=1`` is parsed as a number.
    text = value.strip().lower() if isinstance(value, str) else str(value) if value in (0, 1) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UnexpectedValue("true or false", value)


def _to_float(value: Any, _: Any) -> float:
    number: Any = value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if not isinstance(number, int | float) or isinstance(number, bool) or not math.isfinite(number):
        raise UnexpectedValue("a number", value)
    return float(number)


def _to_str(value: Any, _: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise UnexpectedValue("a string (quote a number to pass it as text)", value)
    if not isinstance(value, str) or not value.strip():
        raise UnexpectedValue("a non-empty string", value)
    return value.strip()


def _is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def _is_literal(annotation: Any) -> bool:
    return get_origin(annotation) is Literal


def make_argument_converter() -> cattrs.Converter:
    """The specs' strict converter, taking also each type's text form; a backend may register more hooks."""
    converter = make_converter()
    typed_str = converter.get_structure_hook(str)

    def str_hook(value: Any, cls: Any) -> Any:
        # str-valued enums dispatch here too: they keep the specs' hook.
        return _to_str(value, cls) if cls is str else typed_str(value, cls)

    def optional_hook(value: Any, annotation: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in _UNSET):
            return None
        (inner,) = (arg for arg in get_args(annotation) if arg is not type(None))
        return converter.structure(value, inner)

    def literal_hook(value: Any, annotation: Any) -> Any:
        choices = get_args(annotation)
        text = value.strip() if isinstance(value, str) else value
        if text not in choices:
            raise UnexpectedValue(f"one of {', '.join(map(str, choices))}", value)
        return text

    converter.register_structure_hook(int, lambda value, _: to_int(value))
    converter.register_structure_hook(bool, _to_bool)
    converter.register_structure_hook(float, _to_float)
    converter.register_structure_hook(str, str_hook)
    converter.register_structure_hook_func(_is_optional, optional_hook)
    converter.register_structure_hook_func(_is_literal, literal_hook)
    converter.register_structure_hook_func(lambda t: _bound(t) is not None, _bounded_int)
    return converter


ARGUMENT_CONVERTER = make_argument_converter()


def structure_arguments(
    raw: Mapping[str, Any],
    cls: type[T],
    backend: str,
    *,
    converter: cattrs.Converter = ARGUMENT_CONVERTER,
    hints: Mapping[str, str] | None = None,
) -> T:
    """``raw`` (a model spec's arguments) as the attrs class ``cls``.

    ``hints`` say, per required argument, how to give it when it is missing.

    Raises:
        BackendArgumentError: ``{backend} backend: ...`` naming each unknown argument (with every accepted
            one), a missing required argument, or each value that is not what its field expects.
    """
    fields = attrs.fields(cast(Any, cls))
    prefix = f"{backend} backend: "
    unknown = sorted(set(raw) - {f.name for f in fields})
    if unknown:
        raise BackendArgumentError(
            f"{prefix}unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted arguments are {', '.join(f.name for f in fields)}"
        )
    for f in fields:
        if f.default is attrs.NOTHING and f.name not in raw:
            hint = (hints or {}).get(f.name)
            raise BackendArgumentError(f"{prefix}missing argument {f.name!r}" + (f"; {hint}" if hint else ""))
    try:
        return converter.structure(dict(raw), cls)
    except Exception as exc:  # cattrs raises groups of heterogeneous errors
        lines = [_problem(key, leaf) for key, leaf in leaf_errors(exc)]
        raise BackendArgumentError("\n".join(prefix + line for line in lines)) from None


def _problem(key: str, error: BaseException) -> str:
    if isinstance(error, UnexpectedValue):
        return f"{key}={error.value!r} must be {error.expected}"
    return f"{key or 'arguments'}: {error}"
