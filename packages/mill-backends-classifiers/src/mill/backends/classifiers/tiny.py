"""Tiny classifiers with random weights, one per family, for tests: nothing is downloaded.

- timm: :data:`TIMM_MODEL` (timm's own test architecture, with a pretrained config: 160 px, crop 0.95,
  bilinear), its weights saved as a checkpoint file;
- torchvision: :data:`TORCHVISION_MODEL` (MobileNetV3-Small, 2.5M parameters), its state dict saved;
- transformers: a two-layer ViT image classifier and its image processor, as ``save_pretrained`` writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TIMM_MODEL = "test_efficientnet.r160_in1k"
TORCHVISION_MODEL = "mobilenet_v3_small"
TORCHVISION_WEIGHTS = "IMAGENET1K_V1"


def write_timm_checkpoint(path: Path, *, seed: int = 1) -> Path:
    """Random weights of :data:`TIMM_MODEL` as a state-dict file (``timm[...,checkpoint=PATH]``)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(TIMM_MODEL, pretrained=False)
    _spread_head(model.get_classifier())
    torch.save(model.state_dict(), path)
    return path


def write_torchvision_checkpoint(path: Path, *, seed: int = 2) -> Path:
    """Random weights of :data:`TORCHVISION_MODEL` as a state-dict file (``torchvision[...,checkpoint=PATH]``)."""
    from torchvision.models import get_model

    torch.manual_seed(seed)
    model = get_model(TORCHVISION_MODEL, weights=None)
    _spread_head(model.classifier[-1])
    torch.save(model.state_dict(), path)
    return path


def _spread_head(head: Any) -> None:
    # Libraries initialise a head near zero, so a random model's top-1 falls on a handful of classes; a unit-scale
    # head without bias spreads it, and tests comparing predictions then compare predictions that vary.
    with torch.no_grad():
        head.weight.normal_(0, 1.0)
        head.bias.zero_()


def write_transformers_classifier(folder: Path, *, num_labels: int = 1000, seed: int = 3) -> Path:
    """A tiny ViT image classifier with random weights and its image processor, saved under ``folder``."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    config.num_labels = num_labels
    model = ViTForImageClassification(config)
    _spread_head(model.classifier)
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
