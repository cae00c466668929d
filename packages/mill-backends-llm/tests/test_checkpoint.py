from __future__ import annotations

import json
from pathlib import Path

import pytest

from mill.backends.llm.checkpoint import Checkpoint
from mill.backends.llm.plugin import hf_plugin, vllm_plugin
from mill.core.errors import BackendArgumentError, ModelNotFoundError


def _refuse_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForImageTextToText, PreTrainedModel

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("capabilities must not load weights")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", refuse)
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", refuse)


def test_vlm_serves_images_without_loading_weights(tiny_vlm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_weights(monkeypatch)
    for plugin in (hf_plugin, vllm_plugin):
        capabilities = plugin.capabilities({"path": str(tiny_vlm)})
        assert capabilities.modalities == {"image", "text"}
        assert capabilities.serves("generative_mcq") and capabilities.serves("likelihood_mcq")
        assert not capabilities.serves("zero_shot")


def test_text_only_model_serves_nothing(text_only_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_weights(monkeypatch)
    capabilities = hf_plugin.capabilities({"path": str(text_only_model)})
    assert capabilities.modalities == {"text"}
    assert not capabilities.serves("generative_mcq") and not capabilities.serves("likelihood_mcq")


def test_vision_config_without_image_processor_serves_nothing(tiny_vlm: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((tiny_vlm / "config.json").read_text())
    assert hf_plugin.capabilities({"path": str(tmp_path)}).modalities == {"text"}


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        hf_plugin.capabilities({"path": str(tmp_path / "nope")})


def test_plausible_hub_id_that_cannot_be_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="nobody/no-such-model"):
        hf_plugin.capabilities({"path": "nobody/no-such-model"})


def test_remote_code_is_the_users_choice(tmp_path: Path) -> None:
    config = {"model_type": "mill_custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendArgumentError) as error:
        vllm_plugin.capabilities({"path": str(tmp_path)})
    message = str(error.value)
    assert "explicit choice" in message and "trust_remote_code=true" in message and "vllm[" in message


def test_local_revision_follows_files(tiny_vlm: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_vlm, copy)
    before = Checkpoint(str(copy), "hf").resolved_revision()
    assert before is not None and before.startswith("local-")
    assert Checkpoint(str(copy), "hf").resolved_revision() == before
    (copy / "model.safetensors").write_bytes(b"changed")
    assert Checkpoint(str(copy), "hf").resolved_revision() != before


def test_local_revision_follows_a_same_size_copy_that_keeps_the_mtime(tiny_vlm: Path, tmp_path: Path) -> None:
    import os
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_vlm, copy)
    weights = copy / "model.safetensors"
    before = Checkpoint(str(copy), "hf").resolved_revision()
    stat = weights.stat()
    other = tmp_path / "other.safetensors"
    other.write_bytes(bytes(stat.st_size))  # another file of the same size, renamed over it as `rsync -t` does
    os.replace(other, weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert Checkpoint(str(copy), "hf").resolved_revision() != before


def test_hub_snapshot_revision_is_its_commit(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--org--name" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    assert Checkpoint(str(snapshot), "hf").resolved_revision() == commit
