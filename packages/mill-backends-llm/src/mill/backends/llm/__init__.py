"""Mill's vision-language backends: transformers (``hf``) and vLLM (``vllm``), generative multiple choice.

Importing this package imports no ML framework; :func:`from_model` (an in-memory transformers model as a
backend) is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mill.backends.llm.memory import InMemoryVlm, from_model


def __getattr__(name: str) -> Any:
    if name in ("from_model", "InMemoryVlm"):
        from mill.backends.llm import memory

        return getattr(memory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["InMemoryVlm", "from_model"]
