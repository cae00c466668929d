from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch
from attrs import evolve

from mill.backends.clip.backend import ClipBackend
from mill.backends.clip.classifier import prompts_for
from mill.core.errors import SpecError
from mill.core.kinds.zero_shot import ZeroShotTask


def _no_text_encoding(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("a classifier cache hit must not encode any text")


def test_second_run_hits_the_cache_without_encoding_text(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, tmp_path: Path
) -> None:
    first = load_tiny()
    built = first.classifier_for(task)
    assert first.run_info() == {"classifier_cache_hit": False, "classifier_cache_key": first.classifier_key(task)}
    assert (tmp_path / "cache" / "classifiers" / f"{first.classifier_key(task)}.pt").is_file()

    second = load_tiny()
    second.model.encode_text = _no_text_encoding
    loaded = second.classifier_for(task)
    assert second.run_info()["classifier_cache_hit"] is True
    assert torch.equal(loaded, built)


def test_key_names_everything_the_classifier_depends_on(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask
) -> None:
    backend = load_tiny()
    key = backend.classifier_key(task)
    assert key == load_tiny().classifier_key(task)
    assert backend.classifier_key(evolve(task, templates=(*task.templates, "art of a {c}."))) != key
    assert backend.classifier_key(evolve(task, classnames=("a", *task.classnames[1:]))) != key
    assert backend.classifier_key(evolve(task, classnames=task.classnames[::-1])) != key
    assert load_tiny(precision="amp_bf16").classifier_key(task) != key
    # Variant and benchmark names do not change the weights, so variants share a classifier.
    assert backend.classifier_key(evolve(task, variant="other", top_k=1)) == key


def test_damaged_cache_entry_is_rebuilt(load_tiny: Callable[..., ClipBackend], task: ZeroShotTask) -> None:
    backend = load_tiny()
    built = backend.classifier_for(task)
    path = backend.context.cache_dir / "classifiers" / f"{backend.classifier_key(task)}.pt"
    path.write_bytes(b"truncated")
    rebuilt = load_tiny().classifier_for(task)
    assert torch.equal(rebuilt, built)
    assert torch.equal(torch.load(path, weights_only=True), built)


def test_text_batching_does_not_change_the_classifier(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, tmp_path: Path
) -> None:
    whole = load_tiny(cache_dir=tmp_path / "a").classifier_for(task)
    chunked = load_tiny(cache_dir=tmp_path / "b", text_batch_size=7).classifier_for(task)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    norms = whole.norm(dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_prompts_are_class_major_and_need_a_placeholder() -> None:
    assert prompts_for(("cat", "dog"), ("a {c}.", "the {c}!")) == ["a cat.", "the cat!", "a dog.", "the dog!"]
    with pytest.raises(SpecError, match="no \\{c\\} placeholder"):
        prompts_for(("cat",), ("a photo.",))
