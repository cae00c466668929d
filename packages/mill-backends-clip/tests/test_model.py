from __future__ import annotations

import hashlib
import json
from pathlib import Path

import open_clip
import pytest
import torch

from mill.backends.clip import ClipArgs, TinyModel, write_tiny_model
from mill.backends.clip.model import Architecture, load_model, quickgelu_architecture, register_config
from mill.core.errors import BackendArgumentError, ModelNotFoundError


def _load(tmp_path: Path, **args: str) -> object:
    return load_model(ClipArgs.from_mapping({"device": "cpu", **args}), cache_dir=tmp_path)


def test_openai_weights_get_the_quickgelu_architecture() -> None:
    assert quickgelu_architecture("ViT-B-32", "openai") == Architecture("ViT-B-32-quickgelu")
    assert quickgelu_architecture("ViT-B-32", "OpenAI").switched_to_quickgelu
    assert quickgelu_architecture("ViT-B-32-quickgelu", "openai") == Architecture("ViT-B-32-quickgelu")
    assert quickgelu_architecture("ViT-B-32", "laion2b_s34b_b79k") == Architecture("ViT-B-32")
    assert quickgelu_architecture("ViT-B-32", None) == Architecture("ViT-B-32")


def test_json_config_is_registered_under_its_stem(tiny: TinyModel, tmp_path: Path) -> None:
    assert register_config(tiny.config_path) == tiny.name
    assert tiny.name in open_clip.list_models()
    other = tmp_path / "other-tiny.json"
    other.write_text(tiny.config_path.read_text())
    assert register_config(other) == "other-tiny"
    assert open_clip.get_model_config("other-tiny") == json.loads(tiny.config_path.read_text())


def test_not_a_model_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"embed_dim": 8}')
    with pytest.raises(BackendArgumentError, match="lacks vision_cfg, text_cfg"):
        register_config(bad)


def test_identity_and_provenance_of_a_local_checkpoint(tiny: TinyModel, tmp_path: Path) -> None:
    loaded = _load(tmp_path, path=str(tiny.config_path), pretrained=str(tiny.checkpoint_path), precision="fp32")
    info = loaded.info  # type: ignore[attr-defined]
    digest = hashlib.sha256(tiny.checkpoint_path.read_bytes()).hexdigest()
    assert info.identity == f"{tiny.name}/{tiny.checkpoint_path.name}"
    assert info.default_settings is False  # fp32 is not the default amp_bf16
    assert info.settings == {"precision": "fp32"}
    assert info.revision == f"sha256:{digest}"
    assert set(info.library_versions) == {"open_clip", "torch", "torchvision"}
    assert info.device_type == "cpu"
    assert info.resolved_args["architecture"] == tiny.name
    assert not loaded.model.training  # type: ignore[attr-defined]


def test_random_init_warns_and_is_reproducible(tiny: TinyModel, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="random weights"):
        first = _load(tmp_path, path=str(tiny.config_path))
    with pytest.warns(UserWarning):
        second = _load(tmp_path, path=str(tiny.config_path))
    assert first.info.identity == f"{tiny.name}/random"  # type: ignore[attr-defined]
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):  # type: ignore[attr-defined]
        assert torch.equal(a, b)


def test_unknown_architecture_and_tag(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="did you mean ViT-B-32"):
        _load(tmp_path, path="ViT-B-23")
    with pytest.raises(ModelNotFoundError, match=r"its tags are: .*laion2b_s34b_b79k"):
        _load(tmp_path, path="ViT-B-32", pretrained="no_such_tag")


def test_bad_device(tiny: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(BackendArgumentError, match="device='gpu0'"):
        _load(tmp_path, path=str(tiny.config_path), pretrained=str(tiny.checkpoint_path), device="gpu0")


def test_tiny_model_is_small_and_seeded(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a")
    b = write_tiny_model(tmp_path / "b")
    c = write_tiny_model(tmp_path / "c", seed=1)
    assert a.checkpoint_path.stat().st_size < 10_000_000
    sd_a, sd_b, sd_c = (torch.load(m.checkpoint_path, weights_only=True) for m in (a, b, c))
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not all(torch.equal(sd_a[k], sd_c[k]) for k in sd_a)
