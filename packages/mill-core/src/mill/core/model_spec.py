"""Model specs: ``backend[key=value,...]`` strings, comma lists of them, and TOML model files.

Values are typed the way a user expects from a command line: ``true``/``false`` → bool, then
int, then float, else str (``tensor_parallel_size=1`` is the int 1). A value holding ``,``,
``[`` or ``]`` is quoted: ``key="a,b"``. Dict- or list-valued arguments go in a TOML model file
(``backend = "vllm"`` plus an ``[args]`` table), named in place of the spec string.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen

from mill.core.errors import ModelSpecError
from mill.core.tomlfile import read_toml


@frozen
class ModelSpec:
    """A parsed model spec. ``head`` is what the user wrote before the brackets."""

    head: str
    args: Mapping[str, Any] = field(factory=dict)
    text: str = ""


def split_top_level(text: str) -> list[str]:
    """Split a comma list, keeping commas inside brackets and quotes with their item.

    Raises:
        ModelSpecError: on unbalanced brackets or quotes.
    """
    items: list[str] = []
    depth = 0
    quote: str | None = None
    current: list[str] = []
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ModelSpecError(f"{text!r}: ']' without a matching '['")
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise ModelSpecError(f"{text!r}: unclosed {'quote' if quote else 'bracket'}")
    items.append("".join(current).strip())
    return [item for item in items if item]


def parse_value(text: str) -> Any:
    """``true``/``false`` → bool, then int, then float, else the string (quotes removed)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_model_spec(text: str) -> ModelSpec:
    """Parse one ``head[key=value,...]`` string, or read a TOML model file when ``text`` names one.

    Raises:
        ModelSpecError: naming the spec and the part that could not be parsed.
    """
    text = text.strip()
    if text.endswith(".toml") and "[" not in text:
        return read_model_file(Path(text))
    if "[" not in text:
        if "]" in text or not text:
            raise ModelSpecError(f"{text!r}: expected backend[key=value,...]")
        return ModelSpec(head=text, text=text)
    head, _, rest = text.partition("[")
    if not rest.endswith("]") or not head:
        raise ModelSpecError(f"{text!r}: expected backend[key=value,...] with the arguments in one bracket pair")
    args: dict[str, Any] = {}
    for item in split_top_level(rest[:-1]):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ModelSpecError(f"{text!r}: argument {item!r} is not key=value")
        if key in args:
            raise ModelSpecError(f"{text!r}: argument {key!r} is given twice")
        args[key] = parse_value(value.strip())
    return ModelSpec(head=head.strip(), args=args, text=text)


def read_model_file(file: Path) -> ModelSpec:
    """Read a TOML model file: ``backend = "vllm"`` and an optional ``[args]`` table."""
    data, _ = read_toml(file, "model", ModelSpecError)
    unknown = set(data) - {"backend", "args"}
    if unknown:
        raise ModelSpecError(f"{file}: unknown key(s) {', '.join(sorted(unknown))}; expected 'backend' and [args]")
    backend = data.get("backend")
    if not isinstance(backend, str):
        raise ModelSpecError(f'{file}: backend: expected a string such as "vllm", got {backend!r}')
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ModelSpecError(f"{file}: args: expected a table")
    return ModelSpec(head=backend, args=args, text=str(file))
