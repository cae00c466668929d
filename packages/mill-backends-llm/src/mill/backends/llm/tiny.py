"""Tiny random-weight vision-language models, built offline, for tests, benchmarks and demos.

A real checkpoint needs a download and minutes of CPU per batch; these models exercise the
same code paths (processor, chat template, image tokens, generation) in seconds. Their answers
are meaningless but deterministic, and they depend on the image, which is what tests need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

TinyKind = Literal["qwen2_vl", "qwen3_vl"]

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen layout without the default system turn, so the request a backend builds is exactly
# what the model sees. Images become the vision placeholder the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Enough text for the BPE trainer to learn merges for the words the MCQ prompts use.
_CORPUS = (
    "Which of these is shown in the image? Answer with the letter of the correct option.",
    "A. tench B. goldfish C. great white shark D. tiger shark E. hammerhead",
    "The answer is A. The answer is B. The answer is C. The answer is D.",
    "a photo of a dog, a cat, a bird, a fish, a car, a plane, a ship, a truck.",
    "Options: (A) (B) (C) (D) (E) (F) (G) (H) (I) (J) 0 1 2 3 4 5 6 7 8 9",
)

_VOCAB_SIZE = 512
# The patch sizes of the real models; images are resized to at most 4x4 patches, so the vision
# tower stays cheap on CPU.
_PATCH_SIZE: dict[TinyKind, int] = {"qwen2_vl": 14, "qwen3_vl": 16}
# Random weights at the usual 0.02 scale give near-uniform logits whose argmax ignores the
# image; a larger scale makes greedy answers depend on it.
_INIT_SCALE = 0.5


def write_tiny_vlm(out_dir: Path, kind: TinyKind = "qwen2_vl", seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen-VL model with a working processor to ``out_dir``.

    The directory loads with ``AutoProcessor`` and ``AutoModelForImageTextToText`` (and with
    vLLM: attention heads are 64 wide). Same ``kind`` and ``seed`` give the same weights.
    Returns ``out_dir``. Raises ``ValueError`` for an unknown ``kind``.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    if kind not in ("qwen2_vl", "qwen3_vl"):
        raise ValueError(f"unknown tiny model kind {kind!r}; use 'qwen2_vl' or 'qwen3_vl'")
    out_dir.mkdir(parents=True, exist_ok=True)
    processor = _processor(kind)
    tokenizer = processor.tokenizer
    config = _config(kind, {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS})
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, _INIT_SCALE / parameter.shape[-1] ** 0.5)
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        extra_special_tokens=list(SPECIAL_TOKENS[3:]),
    )


def _processor(kind: TinyKind) -> Any:
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    classes: dict[TinyKind, tuple[Any, Any]] = {
        "qwen2_vl": (Qwen2VLProcessor, Qwen2VLVideoProcessor),
        "qwen3_vl": (Qwen3VLProcessor, Qwen3VLVideoProcessor),
    }
    processor_class, video_processor_class = classes[kind]
    patch_size = _PATCH_SIZE[kind]
    # One merged token covers (2 * patch_size)^2 pixels: allow 1 to 4 image tokens.
    merged = 2 * patch_size
    return processor_class(
        image_processor=Qwen2VLImageProcessor(
            patch_size=patch_size, min_pixels=merged * merged, max_pixels=(2 * merged) ** 2
        ),
        tokenizer=_tokenizer(),
        video_processor=video_processor_class(patch_size=patch_size),
        chat_template=CHAT_TEMPLATE,
    )


def _config(kind: TinyKind, token_ids: dict[str, int]) -> Any:
    from transformers import AutoConfig

    text: dict[str, Any] = {
        "vocab_size": _VOCAB_SIZE,
        "hidden_size": 128,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
    }
    vision: dict[str, Any]
    if kind == "qwen2_vl":
        vision = {
            "depth": 1,
            "embed_dim": 64,
            "hidden_size": 128,
            "num_heads": 1,
            "mlp_ratio": 2,
            "patch_size": _PATCH_SIZE[kind],
        }
    else:
        vision = {
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 1,
            "out_hidden_size": 128,
            "patch_size": _PATCH_SIZE[kind],
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        }
    return AutoConfig.for_model(
        kind,
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
    )
