"""The demo model bundled with this distribution, addressed as ``clip[path=mill-shapes,pretrained=mill-shapes]``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mill.backends.clip import ClipArgs
from mill.backends.clip.args import BUNDLED_DIR
from mill.backends.clip.model import load_model

MAX_CHECKPOINT_BYTES = 5 * 1024 * 1024


def test_bundled_name_resolves_to_the_packaged_files() -> None:
    args = ClipArgs.from_mapping({"path": "mill-shapes", "pretrained": "mill-shapes"})
    assert args.config_file == BUNDLED_DIR / "mill-shapes.json"
    assert args.checkpoint_file == BUNDLED_DIR / "mill-shapes.pt"
    assert args.weights_name == "mill-shapes"
    args.check_files_exist()


def test_bundled_weights_belong_to_their_own_architecture() -> None:
    # Like an open_clip tag, the bundled weights are not a file for another architecture.
    args = ClipArgs.from_mapping({"path": "ViT-B-32", "pretrained": "mill-shapes"})
    assert args.config_file is None
    assert args.checkpoint_file is None


def test_a_checkpoint_file_keeps_its_file_name(tmp_path: Path) -> None:
    checkpoint = tmp_path / "epoch_3.pt"
    checkpoint.write_bytes(b"")
    args = ClipArgs.from_mapping({"path": "mill-shapes", "pretrained": str(checkpoint)})
    assert args.weights_name == "epoch_3.pt"


def test_bundled_checkpoint_is_small_and_short_context() -> None:
    assert (BUNDLED_DIR / "mill-shapes.pt").stat().st_size <= MAX_CHECKPOINT_BYTES
    config = json.loads((BUNDLED_DIR / "mill-shapes.json").read_text(encoding="utf-8"))
    assert config["text_cfg"]["context_length"] == 16


def test_bundled_model_loads_with_its_identity(tmp_path: Path) -> None:
    args = ClipArgs.from_mapping(
        {"path": "mill-shapes", "pretrained": "mill-shapes", "device": "cpu", "batch_size": 8, "num_workers": 0}
    )
    loaded = load_model(args, cache_dir=tmp_path)
    assert loaded.info.identity == "mill-shapes/mill-shapes"
    assert loaded.weights_key.startswith("sha256:")
    # Stored in float16 to stay small, loaded into the float32 model open_clip builds for amp_bf16.
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
