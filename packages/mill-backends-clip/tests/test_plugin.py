from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mill.backends.clip import TinyModel, plugin
from mill.backends.clip.backend import ClipBackend
from mill.core.backend import Capabilities, RunContext
from mill.core.errors import ModelNotFoundError
from mill.core.plugins import load_plugin


def test_entry_points_resolve_to_the_plugin() -> None:
    found = {ep.name: ep for ep in entry_points(group="mill.backends") if ep.name in {"clip", "open_clip", "openclip"}}
    assert sorted(found) == ["clip", "open_clip", "openclip"]
    assert all(ep.load() is plugin for ep in found.values())
    # The distribution whose version enters the run identity comes from the entry point's metadata.
    assert load_plugin("clip").distribution == "mill-backends-clip"


def test_plugin_import_is_light() -> None:
    code = (
        "import sys, mill.backends.clip.plugin, mill.backends.clip\n"
        "heavy = {'torch', 'open_clip', 'torchvision'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_capabilities_without_loading() -> None:
    capabilities = plugin.capabilities({"path": "ViT-B-32", "pretrained": "openai"})
    assert capabilities == Capabilities(
        kinds=frozenset({"zero_shot", "retrieval"}), modalities=frozenset({"image", "text"})
    )
    assert capabilities.serves("zero_shot") and capabilities.serves("retrieval")
    assert not capabilities.serves("generative_mcq")


def test_missing_files_are_reported_by_capabilities(tiny: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"path=.*nope.json does not exist"):
        plugin.capabilities({"path": str(tmp_path / "nope.json")})
    with pytest.raises(ModelNotFoundError, match=r"pretrained=.*missing.pt does not exist"):
        plugin.capabilities({"path": str(tiny.config_path), "pretrained": str(tmp_path / "missing.pt")})
    with pytest.raises(ModelNotFoundError, match="pretrained="):
        plugin.capabilities({"path": "ViT-B-32", "pretrained": "checkpoints/epoch_3.pt"})


def test_load_returns_a_zero_shot_backend(tiny: TinyModel, tmp_path: Path) -> None:
    args = {"path": str(tiny.config_path), "pretrained": str(tiny.checkpoint_path), "device": "cpu"}
    backend = plugin.load(args, RunContext(cache_dir=tmp_path))
    assert isinstance(backend, ClipBackend)
    assert backend.info.settings == {"precision": "amp_bf16"}
    assert backend.info.default_settings
