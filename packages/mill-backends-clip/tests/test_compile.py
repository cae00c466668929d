"""``compile=true``: the image tower is wrapped by torch.compile; the text tower is left as it is."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from mill.backends.clip import ClipArgs
from mill.backends.clip.backend import ClipBackend
from mill.core.errors import BackendArgumentError


def test_compile_argument_is_a_boolean() -> None:
    assert ClipArgs.from_mapping({"path": "ViT-B-32"}).compile is False
    for text, expected in (("true", True), ("False", False), (True, True), ("1", True), ("no", False)):
        assert ClipArgs.from_mapping({"path": "ViT-B-32", "compile": text}).compile is expected
    with pytest.raises(BackendArgumentError, match="compile='sometimes' must be true or false"):
        ClipArgs.from_mapping({"path": "ViT-B-32", "compile": "sometimes"})


def test_compile_wraps_only_the_image_tower(load_tiny: Callable[..., ClipBackend]) -> None:
    # Compilation itself happens on the first forward pass (over a minute on a small CPU), so this checks
    # the wiring; benchmarks/zero_shot.py --compile measures it on real hardware.
    plain = load_tiny()
    compiled = load_tiny(compile="true")
    assert isinstance(compiled.model.visual, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(compiled.model.transformer, torch._dynamo.eval_frame.OptimizedModule)
    assert type(compiled.model.visual._orig_mod) is type(plain.model.visual)
    assert compiled.info.resolved_args["compile"] is True and plain.info.resolved_args["compile"] is False
