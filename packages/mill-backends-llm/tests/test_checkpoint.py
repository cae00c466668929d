from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mill.backends.llm.checkpoint import Checkpoint
from mill.backends.llm.plugin import hf_plugin, vllm_plugin
from mill.core.backend import RunContext
from mill.core.errors import BackendArgumentError, ModelNotFoundError
from mill.core.hub import hub_cache_dir
from mill.testing.hub import seed_hub_cache


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


# --- offline: a Hub this machine cannot reach --------------------------------------------------------------------

HUB_REPO = "mill-test/tiny-qwen2-vl"
HUB_COMMIT = "c" * 40


def test_offline_uncached_hub_model_fails_at_once(no_route_to_the_hub: list[str], tmp_path: Path) -> None:
    # transformers would ask the hub client for the config, then the processor's files, each retried for ~20 s.
    import transformers  # noqa: F401  (imported before the clock starts: the check is what is timed)

    for plugin, backend in ((hf_plugin, "hf"), (vllm_plugin, "vllm")):
        started = time.monotonic()
        with pytest.raises(ModelNotFoundError) as caught:
            plugin.capabilities({"path": HUB_REPO})
        assert time.monotonic() - started < 3
        assert str(caught.value) == (
            f"{backend} backend: cannot fetch model '{HUB_REPO}': cannot reach the Hugging Face Hub: the host name "
            "does not resolve (Name or service not known); is this machine offline? Download them where there is "
            f"network (`hf download {HUB_REPO}`) into the Hugging Face cache ({hub_cache_dir()}, or the one "
            "HF_HUB_CACHE names), or pass the folder save_pretrained wrote"
        )
    # hf's load asks before the processor is read; a revision goes into the command to run.
    with pytest.raises(ModelNotFoundError, match=rf"`hf download {HUB_REPO} --revision v2`"):
        hf_plugin.load({"path": HUB_REPO, "revision": "v2", "device": "cpu"}, RunContext(cache_dir=tmp_path))
    assert no_route_to_the_hub == ["huggingface.co"] * 3


def test_offline_cached_hub_model_loads_from_the_cache(
    no_route_to_the_hub: list[str], hub_cache: Path, tiny_vlm: Path, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    seed_hub_cache(hub_cache, tiny_vlm, repo_id=HUB_REPO, commit=HUB_COMMIT, absent=())
    started = time.monotonic()
    backend = hf_plugin.load({"path": HUB_REPO, "device": "cpu"}, RunContext(cache_dir=tmp_path))
    assert time.monotonic() - started < 20
    assert backend.info.revision == HUB_COMMIT
    # Asked once; the hub client then stays offline, and so do the processes it starts (vLLM's engine).
    assert no_route_to_the_hub == ["huggingface.co"]
    assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"


def test_offline_hub_model_without_cached_weights_fails_at_once(
    no_route_to_the_hub: list[str], hub_cache: Path, tiny_vlm: Path
) -> None:
    snapshot = seed_hub_cache(hub_cache, tiny_vlm, repo_id=HUB_REPO, commit=HUB_COMMIT, absent=())
    for weights in snapshot.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelNotFoundError, match="cannot reach the Hugging Face Hub"):
        Checkpoint(HUB_REPO, "hf").offline_unless_hub_reachable()


def test_a_reachable_hub_is_left_to_the_hub_client(reachable_hub: None) -> None:
    # Its timeouts and 5xx answers can pass: transformers keeps the client's retries, nothing is switched offline.
    from huggingface_hub import constants

    Checkpoint(HUB_REPO, "hf").offline_unless_hub_reachable()  # not cached, yet no error
    assert not constants.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ
