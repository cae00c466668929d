"""The text-encoding shortcut (encode only up to the longest prompt's end) leaves the classifier unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mill.backends.clip.backend import ClipBackend
from mill.backends.clip.classifier import encode_text, prompts_for
from mill.core.kinds.zero_shot import ZeroShotTask
from mill.data import ShardDataset


def _lengths_seen(model: Any) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    seen: list[int] = []
    handle = model.transformer.register_forward_pre_hook(lambda _module, args: seen.append(args[0].shape[1]))
    return seen, handle


def _full_context(model: Any) -> None:
    """Make ``encode_text`` take open_clip's own path (a replaced method is never shortcut)."""
    model.encode_text = type(model).encode_text.__get__(model)


def test_trimmed_encoding_equals_open_clip_and_skips_padding(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask
) -> None:
    backend = load_tiny()
    model = backend.model
    tokens = backend.loaded.tokenizer(prompts_for(task.classnames, task.templates))
    longest = int((tokens != 0).sum(dim=1).max())
    seen, handle = _lengths_seen(model)
    with torch.inference_mode():
        trimmed = encode_text(model, tokens)
        full = model.encode_text(tokens)
    handle.remove()
    assert seen == [longest, tokens.shape[1]] and longest < tokens.shape[1] // 2
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)  # fp32 rounding of other matmul shapes


def test_classifier_and_predictions_are_unchanged(
    load_tiny: Callable[..., ClipBackend], task: ZeroShotTask, dataset: ShardDataset, tmp_path: Any
) -> None:
    shortcut = load_tiny(cache_dir=tmp_path / "a")
    reference = load_tiny(cache_dir=tmp_path / "b")
    _full_context(reference.model)
    seen, handle = _lengths_seen(reference.model)
    fast = shortcut.classifier_for(task)
    slow = reference.classifier_for(task)
    handle.remove()
    assert seen and set(seen) == {77}, "the reference classifier must be built over the full context"
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)

    images = torch.cat([batch.images for batch in dataset.batches(batch_size=64, transform=shortcut.preprocess)])
    fast_top1 = shortcut.logits_for(images, fast).argmax(dim=-1)
    slow_top1 = shortcut.logits_for(images, slow).argmax(dim=-1)
    assert len(set(slow_top1.tolist())) >= 5, "a random model predicting few classes makes this comparison vacuous"
    assert torch.equal(fast_top1, slow_top1)


def test_non_causal_or_differently_pooled_towers_are_not_trimmed(load_tiny: Callable[..., ClipBackend]) -> None:
    tokens = load_tiny().loaded.tokenizer(["a photo of a cat."])
    for change in ("mask", "pool"):
        model = load_tiny().model
        if change == "mask":
            model.attn_mask = torch.zeros_like(model.attn_mask)  # bidirectional: padding is seen
        else:
            model.text_pool_type = "last"  # pools a padding position
        seen, handle = _lengths_seen(model)
        with torch.inference_mode():
            encoded = encode_text(model, tokens)
        handle.remove()
        assert seen == [77], change
        with torch.inference_mode():
            torch.testing.assert_close(encoded, model.encode_text(tokens), atol=0, rtol=0)
