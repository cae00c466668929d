"""Weights and their names: open_clip tags, and whole models in open_clip's ``hf-hub:`` and ``local-dir:``
schemas, from a folder and from a seeded Hugging Face cache (offline), with the tokenizer, context length and
preprocessing open_clip gives a SigLIP-style model."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from open_clip.tokenizer import HFTokenizer, canonicalize_text
from safetensors.torch import load_file
from transformers import AutoTokenizer

from mill.backends.clip import ClipArgs
from mill.backends.clip.backend import ClipBackend
from mill.backends.clip.pretrained import (
    HubRepo,
    LocalDir,
    hub_cache_dir,
    offline_unless_hub_reachable,
    parse_location,
    tag_weights,
)
from mill.backends.clip.tiny import TINY_SIGLIP_CONTEXT_LENGTH, write_tiny_siglip
from mill.core.backend import RunContext
from mill.core.errors import BackendArgumentError, ModelNotFoundError
from mill.core.kinds.zero_shot import ZeroShotTask
from mill.testing.hub import seed_hub_cache

REPO_ID = "mill-test/tiny-siglip"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _load(path: str, cache_dir: Path) -> ClipBackend:
    args = ClipArgs.from_mapping({"path": path, "precision": "fp32", "device": "cpu", "num_workers": 0})
    return ClipBackend.load(args, RunContext(cache_dir=cache_dir))


def _seed_hub_cache(hub_cache: Path, source: Path, commit: str) -> Path:
    return seed_hub_cache(hub_cache, source, repo_id=REPO_ID, commit=commit)


@pytest.fixture
def hub_model(tmp_path: Path) -> Path:
    """The tiny SigLIP-style model as its Hub repository holds it: the tokenizer named by the repository id."""
    return write_tiny_siglip(tmp_path / "repo", tokenizer_name=REPO_ID)


def test_tag_weights_name_the_tag_and_its_source() -> None:
    weights = tag_weights("ViT-B-32-quickgelu", "openai")
    assert weights.name == "openai"
    assert weights.revision is not None and weights.revision.startswith(
        "openai (hf-hub:timm/vit_base_patch32_clip_224.openai"
    )
    assert weights.key == f"tag:{weights.revision}"


def test_schemas_parse_into_locations() -> None:
    assert parse_location("hf-hub:timm/ViT-B-16-SigLIP") == HubRepo("timm/ViT-B-16-SigLIP")
    assert parse_location("local-dir:/models/ft") == LocalDir(Path("/models/ft"))
    assert parse_location("ViT-B-32") is None
    for bad in ("hf-hub:", "hf-hub:no-org", "hf-hub:a/b/c", "local-dir:"):
        with pytest.raises(BackendArgumentError, match="clip backend: path="):
            ClipArgs.from_mapping({"path": bad})


def test_schema_with_pretrained_is_refused() -> None:
    with pytest.raises(BackendArgumentError, match=r"brings its own weights.*drop pretrained="):
        ClipArgs.from_mapping({"path": "hf-hub:timm/ViT-B-16-SigLIP", "pretrained": "webli"})


def test_local_dir_without_config_or_weights(tmp_path: Path, tiny_siglip: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"open_clip_config\.json"):
        ClipArgs.from_mapping({"path": f"local-dir:{empty}"}).check_files_exist()
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_siglip, no_weights)
    (no_weights / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="no weight file"):
        ClipArgs.from_mapping({"path": f"local-dir:{no_weights}"}).check_files_exist()


def test_local_dir_model_uses_its_own_tokenizer_and_preprocessing(tiny_siglip: Path, tmp_path: Path) -> None:
    backend = _load(f"local-dir:{tiny_siglip}", tmp_path / "cache")
    tokenizer = backend.loaded.tokenizer
    assert isinstance(tokenizer, HFTokenizer)
    assert tokenizer.context_length == TINY_SIGLIP_CONTEXT_LENGTH
    expected = AutoTokenizer.from_pretrained(str(tiny_siglip))("cat").input_ids
    tokens = tokenizer(["Cat"])
    assert tokens.shape == (1, TINY_SIGLIP_CONTEXT_LENGTH)
    assert tokens[0, : len(expected)].tolist() == expected
    normalize = backend.preprocess.transforms[-1]
    assert (list(normalize.mean), list(normalize.std)) == ([0.5] * 3, [0.5] * 3)
    assert type(backend.model).__name__ == "CustomTextCLIP"
    assert backend.info.identity == "local-dir:tiny-siglip"
    assert backend.info.revision is not None and backend.info.revision.startswith("sha256:")


def test_local_dir_identity_is_its_content(tiny_siglip: Path, tmp_path: Path) -> None:
    task = ZeroShotTask(benchmark="b", variant="default", classnames=("cat", "dog"), templates=("a {c}.",))
    original = _load(f"local-dir:{tiny_siglip}", tmp_path / "cache")
    copy = tmp_path / "copied"
    shutil.copytree(tiny_siglip, copy)
    copied = _load(f"local-dir:{copy}", tmp_path / "cache")
    assert copied.info.revision == original.info.revision
    assert copied.classifier_key(task) == original.classifier_key(task)
    # Any file the model is built from counts, the tokenizer's too.
    (copy / "tokenizer_config.json").write_text(
        (copy / "tokenizer_config.json").read_text().replace("}", ', "comment": "edited"}', 1)
    )
    edited = _load(f"local-dir:{copy}", tmp_path / "cache")
    assert edited.info.revision != original.info.revision
    assert edited.classifier_key(task) != original.classifier_key(task)


def test_hub_model_names_its_repository_and_commit(hub_cache: Path, hub_model: Path, tmp_path: Path) -> None:
    snapshot = _seed_hub_cache(hub_cache, hub_model, COMMIT_A)
    backend = _load(f"hf-hub:{REPO_ID}", tmp_path / "cache")
    assert backend.info.identity == f"hf-hub:{REPO_ID}"
    assert backend.info.revision == f"hf-hub:{REPO_ID}@{COMMIT_A}"
    assert REPO_ID in backend.loaded.weights_key and COMMIT_A in backend.loaded.weights_key
    # open_clip built it from the snapshot: the same weights.
    stored = load_file(snapshot / "open_clip_model.safetensors")
    assert torch.equal(backend.model.state_dict()["logit_bias"], stored["logit_bias"])
    assert torch.equal(backend.model.state_dict()["text.token_embedding.weight"], stored["text.token_embedding.weight"])


def test_hub_model_uses_the_tokenizer_and_context_length_of_its_config(
    hub_cache: Path, hub_model: Path, tmp_path: Path
) -> None:
    snapshot = _seed_hub_cache(hub_cache, hub_model, COMMIT_A)
    tokenizer = _load(f"hf-hub:{REPO_ID}", tmp_path / "cache").loaded.tokenizer
    assert isinstance(tokenizer, HFTokenizer)
    assert tokenizer.context_length == TINY_SIGLIP_CONTEXT_LENGTH
    reference = AutoTokenizer.from_pretrained(str(snapshot))
    prompts = ["a photo of a tench.", "itap of a goldfish."]

    def encode(texts: list[str]) -> torch.Tensor:
        return reference(
            texts, max_length=TINY_SIGLIP_CONTEXT_LENGTH, padding="max_length", truncation=True, return_tensors="pt"
        ).input_ids

    # The config's tokenizer_kwargs apply too: SigLIP's canonicalising clean drops the punctuation.
    assert torch.equal(tokenizer(prompts), encode([canonicalize_text(p) for p in prompts]))
    assert not torch.equal(tokenizer(prompts), encode(prompts))


def test_hub_classifier_key_changes_with_the_commit(hub_cache: Path, hub_model: Path, tmp_path: Path) -> None:
    task = ZeroShotTask(benchmark="b", variant="default", classnames=("cat", "dog"), templates=("a {c}.",))
    _seed_hub_cache(hub_cache, hub_model, COMMIT_A)
    at_a = _load(f"hf-hub:{REPO_ID}", tmp_path / "cache")
    # A new commit of the same repository (same files here): main now points at it.
    _seed_hub_cache(hub_cache, hub_model, COMMIT_B)
    at_b = _load(f"hf-hub:{REPO_ID}", tmp_path / "cache")
    assert at_b.info.revision == f"hf-hub:{REPO_ID}@{COMMIT_B}"
    assert at_a.info.identity == at_b.info.identity
    assert at_a.classifier_key(task) != at_b.classifier_key(task)


def test_hub_model_missing_from_the_cache(hub_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=rf"hf-hub:{REPO_ID}.*Hugging Face cache"):
        _load(f"hf-hub:{REPO_ID}", tmp_path / "cache")


def test_hub_snapshot_without_weights_is_refused(hub_cache: Path, hub_model: Path, tmp_path: Path) -> None:
    # open_clip alone would build the model with random weights and only log it.
    snapshot = _seed_hub_cache(hub_cache, hub_model, COMMIT_A)
    (snapshot / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match=rf"{COMMIT_A} has no weight file"):
        _load(f"hf-hub:{REPO_ID}", tmp_path / "cache")


def test_offline_uncached_tag_weights_fail_at_once(no_route_to_the_hub: list[str], tmp_path: Path) -> None:
    # open_clip's factory would ask the hub client for two files, each retried for about 20 s.
    args = ClipArgs.from_mapping(
        {"path": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "device": "cpu", "num_workers": 0}
    )
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError) as caught:
        ClipBackend.load(args, RunContext(cache_dir=tmp_path / "cache"))
    assert time.monotonic() - started < 3
    assert str(caught.value) == (
        "clip backend: cannot fetch the 'laion2b_s34b_b79k' weights of ViT-B-32 "
        "(hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K): cannot reach the Hugging Face Hub: the host name does not "
        "resolve (Name or service not known); is this machine offline? Download them where there is network "
        f"(`hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K`) into the Hugging Face cache ({hub_cache_dir()}, or "
        "the one HF_HUB_CACHE names), or give a local checkpoint file"
    )
    assert no_route_to_the_hub == ["huggingface.co"]


def test_offline_cached_hub_model_loads_from_the_cache(
    no_route_to_the_hub: list[str], hub_cache: Path, hub_model: Path, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    _seed_hub_cache(hub_cache, hub_model, COMMIT_A)
    started = time.monotonic()
    backend = _load(f"hf-hub:{REPO_ID}", tmp_path / "cache")
    assert time.monotonic() - started < 10
    assert backend.info.revision == f"hf-hub:{REPO_ID}@{COMMIT_A}"
    # Asked once; the hub client then stays offline instead of retrying each file it looks for.
    assert no_route_to_the_hub == ["huggingface.co"] and constants.HF_HUB_OFFLINE


def test_offline_uncached_hub_model_fails_at_once(no_route_to_the_hub: list[str], tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=rf"cannot fetch hf-hub:{REPO_ID}: cannot reach the Hugging Face Hub"):
        _load(f"hf-hub:{REPO_ID}", tmp_path / "cache")


def test_a_reachable_hub_is_left_to_the_hub_client(reachable_hub: None) -> None:
    # Its timeouts and 5xx answers can pass: the client keeps its retries, and nothing is switched offline.
    from huggingface_hub import constants

    offline_unless_hub_reachable(None, "ViT-B-32", "laion2b_s34b_b79k")  # not cached, yet no error
    offline_unless_hub_reachable(HubRepo(REPO_ID), "", None)
    assert not constants.HF_HUB_OFFLINE
