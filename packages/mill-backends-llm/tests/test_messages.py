from __future__ import annotations

from PIL import Image

from mill.backends.llm.messages import build_conversation, build_vllm_request


def test_one_user_turn_image_first() -> None:
    assert build_conversation("Which?") == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}
    ]


def test_vllm_request_carries_the_image_in_the_placeholder() -> None:
    image = Image.new("RGB", (8, 8), "red")
    request = build_vllm_request(image, "Which?")
    assert request == [
        {
            "role": "user",
            "content": [{"type": "image_pil", "image_pil": image}, {"type": "text", "text": "Which?"}],
        }
    ]
    assert request[0]["content"][0]["image_pil"] is image
