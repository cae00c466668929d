"""The run identity: every input that can change a number changes the digest; speed-only arguments do not."""

from __future__ import annotations

from typing import Any

import pytest
from attrs import evolve

from mill.core.backend import ModelInfo
from mill.core.run_identity import RunIdentity

INFO = ModelInfo(
    identity="ViT-B-32/laion2b_s34b_b79k",
    settings={"precision": "amp_bf16"},
    resolved_args={"path": "ViT-B-32", "precision": "amp_bf16", "batch_size": 256, "num_workers": 8, "device": None},
    revision="tag:laion2b_s34b_b79k",
    library_versions={"open_clip": "3.3.0", "torch": "2.14.1"},
    device_type="cuda",
)


def _identity(info: ModelInfo = INFO, **overrides: Any) -> RunIdentity:
    args: dict[str, Any] = {
        "settings": info.settings,
        "versions": {"mill-core": "0.1.0"},
        "benchmark": "imagenet",
        "spec_hash": "abc",
        "variant": "imagenet",
        "seed": 42,
        "limit": None,
        "shards": [("test/0.tar", 1000, "a" * 64), ("test/1.tar", 900, "b" * 64)],
    }
    args.update(overrides)
    return RunIdentity.of(info, **args)


def test_same_inputs_same_digest_whatever_the_mapping_order() -> None:
    reordered = evolve(INFO, resolved_args=dict(reversed(list(INFO.resolved_args.items()))))
    assert _identity().digest() == _identity(reordered).digest()
    assert len(_identity().digest()) == 32


@pytest.mark.parametrize(
    "change",
    [
        {"settings": {"precision": "fp32"}},
        {"settings": {"precision": "amp_bf16", "max_new_tokens": "32"}},
        {"versions": {"mill-core": "0.2.0"}},
        {"benchmark": "other"},
        {"spec_hash": "abd"},
        {"variant": "imagenet_mcq"},
        {"seed": 0},
        {"limit": 16},
        {"shards": [("test/0.tar", 1000, "a" * 64)]},
        {"shards": [("test/0.tar", 1000, "a" * 64), ("test/1.tar", 901, "b" * 64)]},
        # Same name and size, other content: a new run, not a resumed one.
        {"shards": [("test/0.tar", 1000, "a" * 64), ("test/1.tar", 900, "c" * 64)]},
    ],
)
def test_every_run_input_changes_the_digest(change: dict[str, Any]) -> None:
    assert _identity(**change).digest() != _identity().digest()


@pytest.mark.parametrize(
    "info",
    [
        evolve(INFO, identity="ViT-B-32/openai"),
        evolve(INFO, revision="sha256:0123"),
        evolve(INFO, resolved_args={**INFO.resolved_args, "path": "ViT-B-16"}),
        evolve(INFO, library_versions={**INFO.library_versions, "open_clip": "3.4.0"}),
        evolve(INFO, device_type="cpu"),
    ],
)
def test_every_model_fact_changes_the_digest(info: ModelInfo) -> None:
    assert _identity(info).digest() != _identity().digest()


def test_speed_only_arguments_do_not_change_the_digest() -> None:
    faster = evolve(INFO, resolved_args={**INFO.resolved_args, "batch_size": 64, "num_workers": 2, "device": "cuda:1"})
    assert _identity(faster).digest() == _identity().digest()
    assert "batch_size" not in _identity().as_dict()["model_args"]
