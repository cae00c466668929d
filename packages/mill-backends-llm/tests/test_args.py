from __future__ import annotations

import pytest

from mill.backends.llm.args import HfArgs, VllmArgs, output_settings, parse_args
from mill.core.errors import BackendArgumentError


def test_unknown_argument_lists_accepted_ones() -> None:
    with pytest.raises(BackendArgumentError) as error:
        parse_args(HfArgs, {"path": "m", "batchsize": 4}, "hf")
    message = str(error.value)
    assert "batchsize" in message
    assert "batch_size" in message and "min_pixels" in message


def test_missing_path_says_how_to_name_a_model() -> None:
    with pytest.raises(BackendArgumentError, match="path="):
        parse_args(VllmArgs, {"dtype": "float16"}, "vllm")


def test_defaults() -> None:
    hf = parse_args(HfArgs, {"path": "m"}, "hf")
    vllm = parse_args(VllmArgs, {"path": "m"}, "vllm")
    assert hf.trust_remote_code is False and vllm.trust_remote_code is False
    assert hf.dtype == "bfloat16" and hf.batch_size is None and hf.device is None
    assert vllm.chunk_size == 1024 and dict(vllm.limit_mm_per_prompt) == {"image": 1}


def test_string_values_are_coerced_by_field_type() -> None:
    args = parse_args(
        VllmArgs,
        {
            "path": "m",
            "trust_remote_code": "true",
            "tensor_parallel_size": "2",
            "gpu_memory_utilization": "0.5",
            "limit_mm_per_prompt": "image=2;video=0",
            "max_model_len": "none",
        },
        "vllm",
    )
    assert args.trust_remote_code is True
    assert args.tensor_parallel_size == 2 and args.gpu_memory_utilization == 0.5
    assert dict(args.limit_mm_per_prompt) == {"image": 2, "video": 0}
    assert args.max_model_len is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("dtype", "float64"), ("batch_size", "0"), ("batch_size", "four"), ("trust_remote_code", "maybe")],
)
def test_bad_values_name_the_argument(key: str, value: str) -> None:
    with pytest.raises(BackendArgumentError, match=key):
        parse_args(HfArgs, {"path": "m", key: value}, "hf")


def test_settings_hold_what_changes_answers() -> None:
    args = parse_args(HfArgs, {"path": "m", "dtype": "float32", "max_pixels": 3136, "batch_size": 2}, "hf")
    assert output_settings(args) == {"dtype": "float32", "max_pixels": "3136"}


def test_path_may_be_a_path_object() -> None:
    from pathlib import Path

    assert parse_args(HfArgs, {"path": Path("models") / "tiny"}, "hf").path == "models/tiny"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("gpu_memory_utilization", "1.5", "a number in (0, 1]"),
        ("gpu_memory_utilization", 0, "a number in (0, 1]"),
        ("limit_mm_per_prompt", "image=-1", "a mapping of modality to count"),
        ("limit_mm_per_prompt", "{not json", "a mapping of modality to count"),
        ("tensor_parallel_size", 0, "an integer >= 1"),
    ],
)
def test_vllm_values_out_of_range_say_what_was_expected(key: str, value: object, expected: str) -> None:
    with pytest.raises(BackendArgumentError) as error:
        parse_args(VllmArgs, {"path": "m", key: value}, "vllm")
    assert str(error.value).startswith(f"vllm backend: {key}={value!r} must be {expected}")


def test_counts_from_a_model_file_table() -> None:
    args = parse_args(VllmArgs, {"path": "m", "limit_mm_per_prompt": {"image": 3}}, "vllm")
    assert dict(args.limit_mm_per_prompt) == {"image": 3}
