"""The one request every generative backend sends: a single user turn, the image first, then the question.

No system prompt is added: the model's own chat template decides what surrounds the turn, so
the same sample reaches transformers and vLLM as the same rendered text and the same image.
Every backend builds its request from :func:`build_conversation`; only the way the image
travels differs (transformers hands it to the processor, vLLM carries it in the message, an
OpenAI-compatible endpoint receives it inline as a PNG data URL).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL.Image import Image

Conversation = list[dict[str, Any]]


def build_conversation(prompt: str) -> Conversation:
    """The chat messages for ``prompt`` with one image placeholder before it (transformers' form)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def build_vllm_request(image: Image, prompt: str) -> Conversation:
    """The conversation of :func:`build_conversation` with ``image`` carried in its placeholder.

    vLLM's ``LLM.chat`` accepts a raw PIL image as an ``image_pil`` content part and shows its
    chat template an ``{"type": "image"}`` item in its place, so the template renders exactly
    what transformers renders for :func:`build_conversation`.
    """
    return _with_image({"type": "image_pil", "image_pil": image}, prompt)


def build_openai_request(image: Image, prompt: str) -> Conversation:
    """The conversation of :func:`build_conversation` with ``image`` inline in its placeholder, as an
    OpenAI-compatible endpoint takes it: an ``image_url`` part holding a base64 PNG data URL.

    PNG is lossless, so the server decodes the very pixels the in-process backends receive; any resizing
    (a Qwen-VL processor's pixel limits) is the server's own processor's, as it is transformers' in-process.
    """
    return _with_image({"type": "image_url", "image_url": {"url": png_data_url(image)}}, prompt)


def png_data_url(image: Image) -> str:
    """``image`` as a ``data:image/png;base64,...`` URL (lossless, deterministic for the same pixels)."""
    buffer = io.BytesIO()
    # Level 1: photos hardly compress further at 6, which takes twice as long (0.12 s for a 500x375 photo).
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _with_image(part: dict[str, Any], prompt: str) -> Conversation:
    """:func:`build_conversation`'s messages with its image placeholder replaced by ``part``."""
    conversation = build_conversation(prompt)
    for message in conversation:
        message["content"] = [part if item["type"] == "image" else item for item in message["content"]]
    return conversation


def render_prompt(processor: Any, prompt: str) -> str:
    """The text a transformers processor's chat template makes of ``prompt``, ready for generation."""
    text = processor.apply_chat_template(build_conversation(prompt), add_generation_prompt=True, tokenize=False)
    return str(text)
