"""The one converter that turns untyped data (TOML tables, model-spec arguments) into attrs classes.

Types are checked strictly (``'32x'`` is no integer, ``1`` is no string), unknown keys are refused,
and a failure becomes one line per problem, ``dotted.path: what was expected, got what``, so a spec
file and a backend argument report their mistakes the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any, TypeVar

import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

T = TypeVar("T")


class UnexpectedValue(ValueError):
    """What a structure hook raises: the value it was given and what it expected instead, kept apart so
    that a caller can word the problem in its input's own syntax (``key=value`` for backend arguments)."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {value!r}")
        self.expected = expected
        self.value = value


def _strict(expected: str, types: tuple[type, ...]) -> Any:
    """A structure hook that accepts only the types given, never coercing ('32x' is no int)."""

    def hook(value: Any, _: Any) -> Any:
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise UnexpectedValue(expected, value)
        return value

    return hook


def _enum_hook(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in cls)
        raise UnexpectedValue(f"one of {choices}", value) from None


def make_converter() -> cattrs.Converter:
    """A strict converter; callers may register hooks of their own on a converter made here."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    strict_str = _strict("a string", (str,))

    def str_or_enum(value: Any, cls: type) -> Any:
        # A str-valued enum is a subclass of str, so this hook is dispatched for it too.
        return _enum_hook(value, cls) if issubclass(cls, enum.Enum) else strict_str(value, cls)

    converter.register_structure_hook(int, _strict("an integer", (int,)))
    converter.register_structure_hook(str, str_or_enum)
    converter.register_structure_hook(bool, _strict("true or false", (bool,)))
    converter.register_structure_hook(float, lambda v, _: float(_strict("a number", (int, float))(v, None)))
    converter.register_structure_hook(enum.Enum, _enum_hook)
    return converter


CONVERTER = make_converter()


def leaf_errors(exc: BaseException, path: str = "") -> Iterator[tuple[str, BaseException]]:
    """The single problems inside cattrs' exception groups, each with the dotted path it belongs to."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            part = note.name if hasattr(note, "name") else str(note.index)
            yield from leaf_errors(sub, f"{path}.{part}" if path else part)
        for sub in without:
            yield from leaf_errors(sub, path)
    else:
        yield path, exc


def error_lines(exc: BaseException, path: str = "") -> list[str]:
    """Flatten cattrs' exception groups into ``dotted.path: message`` lines."""
    return [_error_line(where, leaf) for where, leaf in leaf_errors(exc, path)]


def _error_line(path: str, exc: BaseException) -> str:
    where = path or "(top level)"
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(sorted(exc.extra_fields))
        return f"{where}: unknown key(s) {keys}"
    if isinstance(exc, KeyError):
        return f"{where}: required key is missing"
    message = str(exc)
    if isinstance(exc, TypeError) and "missing" in message and "required" in message:
        return f"{where}: {message.split(': ', 1)[-1]}"
    return f"{where}: {message}"


def structure(data: Any, cls: type[T], *, converter: cattrs.Converter = CONVERTER, path: str = "") -> T:
    """``data`` as ``cls``.

    Raises:
        ValueError: one ``dotted.path: message`` line per problem (callers wrap it in their MillError).
    """
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # cattrs raises groups of heterogeneous errors
        raise ValueError("\n".join(error_lines(exc, path))) from None
