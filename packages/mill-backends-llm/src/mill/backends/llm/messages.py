"""The one request every generative backend sends: a single user turn, the image first, then the question.

No system prompt is added: the model's own chat template decides what surrounds the turn, so
the same sample reaches transformers and vLLM as the same rendered text and the same image.
Both backends build their request from :func:`build_conversation`; only the way the image
travels differs (transformers hands it to the processor, vLLM carries it in the message).
"""

from __future__ import annotations

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
    conversation = build_conversation(prompt)
    for message in conversation:
        message["content"] = [
            {"type": "image_pil", "image_pil": image} if part["type"] == "image" else part
            for part in message["content"]
        ]
    return conversation


def render_prompt(processor: Any, prompt: str) -> str:
    """The text a transformers processor's chat template makes of ``prompt``, ready for generation."""
    text = processor.apply_chat_template(build_conversation(prompt), add_generation_prompt=True, tokenize=False)
    return str(text)
