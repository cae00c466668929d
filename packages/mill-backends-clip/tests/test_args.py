from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from mill.backends.clip import ClipArgs
from mill.core.backend import RunContext
from mill.core.errors import BackendArgumentError
from mill.core.precision import DTYPE_PRECISIONS, PRECISIONS, DtypeName, PrecisionName


@pytest.mark.parametrize(("dtype", "precision"), [("bfloat16", "amp_bf16"), ("float16", "amp"), ("float32", "fp32")])
def test_dtype_is_shorthand_for_precision(dtype: str, precision: str) -> None:
    assert ClipArgs.from_mapping({"path": "ViT-B-32", "dtype": dtype}).precision.name == precision
    both = ClipArgs.from_mapping({"path": "ViT-B-32", "dtype": dtype, "precision": precision})
    assert both.precision.name == precision


def test_default_precision_is_amp_bf16() -> None:
    precision = ClipArgs.from_mapping({"path": "ViT-B-32"}).precision
    assert (precision.name, precision.model_precision, precision.autocast_dtype) == ("amp_bf16", "fp32", "bfloat16")


def test_conflicting_dtype_and_precision() -> None:
    with pytest.raises(BackendArgumentError, match="contradicts precision='fp32'"):
        ClipArgs.from_mapping({"path": "ViT-B-32", "dtype": "bfloat16", "precision": "fp32"})


def test_unknown_argument_lists_accepted_ones() -> None:
    with pytest.raises(BackendArgumentError, match=r"'model'.*accepted arguments are path, pretrained, precision"):
        ClipArgs.from_mapping({"path": "ViT-B-32", "model": "x"})


def test_bad_precision_lists_choices() -> None:
    with pytest.raises(BackendArgumentError, match="amp_bf16, amp, fp32, pure_bf16, pure_fp16"):
        ClipArgs.from_mapping({"path": "ViT-B-32", "precision": "bf16"})


def test_missing_path() -> None:
    with pytest.raises(BackendArgumentError, match="missing argument 'path'"):
        ClipArgs.from_mapping({"pretrained": "openai"})


def test_schema_paths_are_locations_not_config_files() -> None:
    hub = ClipArgs.from_mapping({"path": "hf-hub:timm/ViT-B-16-SigLIP"})
    assert hub.location is not None and hub.location.model_name == "hf-hub:timm/ViT-B-16-SigLIP"
    assert hub.config_file is None
    local = ClipArgs.from_mapping({"path": "local-dir:models/ft"})
    assert local.location is not None and local.config_file is None


def test_integers_from_spec_strings_and_bad_values() -> None:
    args = ClipArgs.from_mapping({"path": "ViT-B-32", "batch_size": "32", "num_workers": 0})
    assert (args.batch_size, args.num_workers) == (32, 0)
    for bad in ({"batch_size": 0}, {"batch_size": "many"}, {"num_workers": -1}, {"text_batch_size": True}):
        with pytest.raises(BackendArgumentError, match=next(iter(bad))):
            ClipArgs.from_mapping({"path": "ViT-B-32", **bad})


def test_resolve_prefers_spec_then_context_then_defaults(tmp_path: Path) -> None:
    bare = ClipArgs.from_mapping({"path": "ViT-B-32"})
    cpu = bare.resolve(RunContext(cache_dir=tmp_path), cuda_available=False)
    assert (cpu.device, cpu.batch_size) == ("cpu", 64)
    assert cpu.num_workers is not None and 1 <= cpu.num_workers <= 8
    gpu = bare.resolve(RunContext(cache_dir=tmp_path), cuda_available=True)
    assert (gpu.device, gpu.batch_size) == ("cuda", 256)
    context = RunContext(cache_dir=tmp_path, device="cpu", batch_size=8, num_workers=0)
    from_context = bare.resolve(context, cuda_available=True)
    assert (from_context.device, from_context.batch_size, from_context.num_workers) == ("cpu", 8, 0)
    spec = ClipArgs.from_mapping({"path": "ViT-B-32", "device": "cuda:1", "batch_size": 3, "num_workers": 1})
    resolved = spec.resolve(context, cuda_available=True)
    assert (resolved.device, resolved.batch_size, resolved.num_workers) == ("cuda:1", 3, 1)


def test_file_detection() -> None:
    assert ClipArgs.from_mapping({"path": "ViT-B-32", "pretrained": "openai"}).checkpoint_file is None
    assert ClipArgs.from_mapping({"path": "ViT-B-32"}).config_file is None
    assert ClipArgs.from_mapping({"path": "my.json"}).config_file == Path("my.json")
    assert ClipArgs.from_mapping({"path": "x", "pretrained": "ckpt/epoch_32.pt"}).checkpoint_file is not None


def test_every_precision_name_has_one_entry_in_order() -> None:
    assert tuple(PRECISIONS) == get_args(PrecisionName)
    assert set(DTYPE_PRECISIONS) == set(get_args(DtypeName)) and set(DTYPE_PRECISIONS.values()) <= set(PRECISIONS)


def test_bad_dtype_lists_choices() -> None:
    with pytest.raises(BackendArgumentError, match=r"clip backend: dtype='fp16' must be one of bfloat16, float16"):
        ClipArgs.from_mapping({"path": "ViT-B-32", "dtype": "fp16"})
