"""Each family on a machine with no route to its hub (a resolver that knows no hosts): weights not cached fail
within seconds in one line naming the repository or URL and what to run, cached ones load without network, a
bare id is routed without waiting on the Hub, and a hub that can be reached is left to the library's client."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from mill.backends.classifiers.families import offline_unless_torch_hub_reachable
from mill.backends.classifiers.plugin import hf_classifier_plugin, timm_plugin, torchvision_plugin
from mill.backends.classifiers.tiny import TIMM_MODEL, TORCHVISION_MODEL, TORCHVISION_WEIGHTS
from mill.core.backend import RunContext
from mill.core.errors import ModelNotFoundError
from mill.core.hub import hub_cache_dir
from mill.core.model_spec import parse_model_spec
from mill.core.plugins import resolve_model
from mill.testing.cli import Mill
from mill.testing.hub import seed_hub_cache

COMMIT = "d" * 40
NO_DNS = "the host name does not resolve (Name or service not known); is this machine offline?"
TORCHVISION_URL = "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache (``TORCH_HOME``)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_timm_tag_not_cached_fails_through_mill_eval_in_one_line_at_once(
    no_route_to_the_hub: list[str], imagenet_shards: Path, mill_in_process: Mill, tmp_path: Path
) -> None:
    # timm would ask the hub client for model.safetensors, then pytorch_model.bin: a minute of retries.
    started = time.monotonic()
    done = mill_in_process(
        "eval", "timm[name=resnet50.a1_in1k]", "imagenet", "--data_dir", str(imagenet_shards),
        "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert time.monotonic() - started < 5
    assert done.code == 2
    assert [line for line in done.err.splitlines() if line.strip()] == [
        "error: timm backend: cannot fetch resnet50.a1_in1k (timm/resnet50.a1_in1k): cannot reach the Hugging Face "
        f"Hub: {NO_DNS} Download them where there is network (`hf download timm/resnet50.a1_in1k`) into the Hugging "
        f"Face cache ({hub_cache_dir()}, or the one HF_HUB_CACHE names), or give a local weights file with checkpoint="
    ]
    assert set(no_route_to_the_hub) == {"huggingface.co"}


def test_timm_hub_repository_not_cached_fails_at_once(no_route_to_the_hub: list[str]) -> None:
    with pytest.raises(ModelNotFoundError, match=r"cannot fetch hf-hub:org/model@v1 \(org/model\): cannot reach"):
        timm_plugin.capabilities({"name": "hf-hub:org/model@v1"})
    with pytest.raises(ModelNotFoundError, match=r"`hf download org/model --revision v1`"):
        timm_plugin.capabilities({"name": "hf-hub:org/model@v1"})


def _tiny_timm_weights(folder: Path) -> Path:
    """:data:`TIMM_MODEL`'s random weights as its Hub repository holds them (``model.safetensors``)."""
    folder.mkdir()
    torch.manual_seed(0)
    save_file(timm.create_model(TIMM_MODEL, pretrained=False).state_dict(), folder / "model.safetensors")
    return folder


def test_timm_weights_in_the_cache_load_offline(
    no_route_to_the_hub: list[str], hub_cache: Path, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    repo_id = f"timm/{TIMM_MODEL}"
    seed_hub_cache(hub_cache, _tiny_timm_weights(tmp_path / "repo"), repo_id=repo_id, commit=COMMIT, absent=())
    started = time.monotonic()
    backend = timm_plugin.load({"name": TIMM_MODEL, "device": "cpu"}, RunContext(cache_dir=tmp_path / "cache"))
    assert time.monotonic() - started < 10
    assert backend.info.identity == TIMM_MODEL
    assert no_route_to_the_hub == ["huggingface.co"] and constants.HF_HUB_OFFLINE


def test_transformers_classifier_offline(
    no_route_to_the_hub: list[str], hub_cache: Path, transformers_folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        hf_classifier_plugin.capabilities({"path": "org/vit"})
    assert str(caught.value).startswith(
        f"hf_classifier backend: cannot fetch model 'org/vit': cannot reach the Hugging Face Hub: {NO_DNS} "
        "Download them where there is network (`hf download org/vit`)"
    )
    seed_hub_cache(hub_cache, transformers_folder, repo_id="org/vit", commit=COMMIT, absent=())
    started = time.monotonic()
    backend = hf_classifier_plugin.load({"path": "org/vit", "device": "cpu"}, RunContext(cache_dir=tmp_path))
    assert time.monotonic() - started < 10
    assert backend.info.identity == "org/vit"


def test_bare_ids_are_routed_without_waiting_on_the_hub(
    no_route_to_the_hub: list[str], hub_cache: Path, transformers_folder: Path
) -> None:
    # The claims read a config.json: one not in the cache cannot be had, and the id goes to the default backend.
    started = time.monotonic()
    assert resolve_model(parse_model_spec("org/unknown")).backend == "hf"
    assert time.monotonic() - started < 3
    seed_hub_cache(hub_cache, transformers_folder, repo_id="org/vit", commit=COMMIT, absent=())
    assert resolve_model(parse_model_spec("org/vit")).backend == "hf_classifier"


def test_torchvision_weights_not_cached_fail_at_once(
    no_route_to_the_hub: list[str], torch_home: Path, tmp_path: Path
) -> None:
    cached = torch_home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    with pytest.raises(ModelNotFoundError) as caught:
        torchvision_plugin.load(
            {"name": TORCHVISION_MODEL, "weights": TORCHVISION_WEIGHTS}, RunContext(cache_dir=tmp_path / "cache")
        )
    assert str(caught.value) == (
        f"torchvision backend: cannot download the {TORCHVISION_WEIGHTS} weights of {TORCHVISION_MODEL} from "
        f"{TORCHVISION_URL}: {NO_DNS} Download it where there is network into {cached} (the torch hub cache, "
        "under TORCH_HOME), or give a local weights file with checkpoint="
    )
    assert no_route_to_the_hub == ["download.pytorch.org"]
    # Once there, torch's hub reads it without asking.
    cached.parent.mkdir(parents=True)
    from torchvision.models import get_model

    torch.save(get_model(TORCHVISION_MODEL, weights=None).state_dict(), cached)
    backend = torchvision_plugin.load(
        {"name": TORCHVISION_MODEL, "weights": TORCHVISION_WEIGHTS}, RunContext(cache_dir=tmp_path / "cache")
    )
    assert backend.info.identity == f"{TORCHVISION_MODEL}/{TORCHVISION_WEIGHTS}"


def test_reachable_hubs_are_left_to_their_clients(reachable_hub: None, torch_home: Path) -> None:
    # Their timeouts and 5xx answers can pass: the clients keep their retries, nothing is switched offline.
    from huggingface_hub import constants

    from mill.backends.classifiers.args import TransformersArgs
    from mill.backends.classifiers.families import transformers_offline_unless_reachable

    transformers_offline_unless_reachable(TransformersArgs.from_mapping({"path": "org/vit"}))
    offline_unless_torch_hub_reachable(TORCHVISION_URL, backend="torchvision", what="weights")
    assert not constants.HF_HUB_OFFLINE
