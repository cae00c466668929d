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
