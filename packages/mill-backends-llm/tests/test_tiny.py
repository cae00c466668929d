from __future__ import annotations

from pathlib import Path

import pytest

from mill.backends.llm.tiny import write_tiny_vlm


def test_tiny_vlm_loads_with_auto_classes(tiny_vlm: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert model.config.text_config.hidden_size // model.config.text_config.num_attention_heads == 64
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    size = sum(path.stat().st_size for path in tiny_vlm.iterdir())
    assert size < 4_000_000


def test_same_seed_same_weights(tiny_vlm: Path, tmp_path: Path) -> None:
    again = write_tiny_vlm(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (tiny_vlm / "model.safetensors").read_bytes()


def test_qwen3_vl_generates(tmp_path: Path) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mill.backends.llm.messages import render_prompt

    out = write_tiny_vlm(tmp_path / "qwen3", kind="qwen3_vl")
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    images = [Image.new("RGB", (64, 64), color) for color in ("red", "blue")]
    inputs = processor(text=[render_prompt(processor, "Which?")] * 2, images=images, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=2)
    assert output.shape[1] - inputs["input_ids"].shape[1] <= 2


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="qwen2_vl"):
        write_tiny_vlm(tmp_path, kind="llava")  # type: ignore[arg-type]
