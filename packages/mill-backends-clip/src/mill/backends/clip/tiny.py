"""A tiny random-weight open_clip model, written to disk, for tests, benchmarks and docs.

It exercises the real loading path (JSON config registered with open_clip, checkpoint file
hashed and loaded) in well under a second on a CPU, without any download.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import frozen

TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    # Average pooling (not the class token) makes a random-weight model's predictions depend on the
    # image, so equivalence tests compare predictions that vary.
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 8,
        "width": 64,
        "layers": 2,
        "head_width": 32,
        "pool_type": "avg",
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@frozen
class TinyModel:
    """Where :func:`write_tiny_model` put the model: pass ``path=config_path, pretrained=checkpoint_path``."""

    config_path: Path
    checkpoint_path: Path
    name: str


def write_tiny_model(out_dir: Path, seed: int = 0, name: str = "mill-tiny-clip") -> TinyModel:
    """Write ``{name}.json`` (open_clip model config) and ``{name}.pt`` (seeded random state dict).

    The same ``seed`` gives byte-identical weights. The global torch RNG is left untouched.
    """
    import torch
    from open_clip.model import CLIP

    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{name}.json"
    checkpoint_path = out_dir / f"{name}.pt"
    config_path.write_text(json.dumps(TINY_CONFIG, indent=2) + "\n", encoding="utf-8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # A deep copy: open_clip's constructor may mutate the nested config dicts.
        model = CLIP(**json.loads(json.dumps(TINY_CONFIG)))
    torch.save(model.state_dict(), checkpoint_path)
    return TinyModel(config_path=config_path, checkpoint_path=checkpoint_path, name=name)


#: A SigLIP-style tiny model, as open_clip publishes SigLIP on the Hub: a custom text tower without a causal
#: mask, pooled at the last position, an ``HFTokenizer`` of its own with a context length other than CLIP's 77,
#: SigLIP's preprocessing (mean and std 0.5, squash resize) and a logit bias.
TINY_SIGLIP_CONTEXT_LENGTH = 48
TINY_SIGLIP_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32, "pool_type": "avg"},
    "text_cfg": {
        "context_length": TINY_SIGLIP_CONTEXT_LENGTH,
        "vocab_size": 64,
        "tokenizer_kwargs": {"clean": "canonicalize"},
        "width": 32,
        "heads": 2,
        "layers": 1,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
    },
}
TINY_SIGLIP_PREPROCESS_CFG: dict[str, Any] = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "squash",
}
_TINY_SPECIALS = ("<pad>", "</s>", "<unk>")
_TINY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,'-&()/!?"


def write_tiny_siglip(folder: Path, *, tokenizer_name: str = "mill-tiny-siglip", seed: int = 0) -> Path:
    """Write a tiny random-weight SigLIP-style model into ``folder`` in open_clip's Hub layout; returns ``folder``.

    ``open_clip_config.json`` (``model_cfg`` naming ``tokenizer_name`` as its ``hf_tokenizer_name``, and
    ``preprocess_cfg``), ``open_clip_model.safetensors`` (seeded) and a character-level Hugging Face tokenizer
    (``tokenizer.json``, ``tokenizer_config.json``). For a Hub repository ``tokenizer_name`` must be the
    repository's id, as in open_clip's own SigLIP configs; a ``local-dir:`` folder's tokenizer is always
    read from the folder. Needs ``transformers`` and ``tokenizers``.
    """
    import torch
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = json.loads(json.dumps(TINY_SIGLIP_MODEL_CFG))
    model_cfg["text_cfg"]["hf_tokenizer_name"] = tokenizer_name
    config = {"model_cfg": model_cfg, "preprocess_cfg": TINY_SIGLIP_PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    build_cfg = json.loads(json.dumps(model_cfg))
    del build_cfg["custom_text"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CustomTextCLIP(**build_cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")

    vocab = {token: i for i, token in enumerate((*_TINY_SPECIALS, *_TINY_CHARS))}
    assert len(vocab) <= model_cfg["text_cfg"]["vocab_size"]
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    return folder
