"""Model spec strings, comma lists and TOML model files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mill.core.errors import ModelSpecError
from mill.core.model_spec import parse_model_spec, parse_value, split_top_level


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("false", False),
        ("1", 1),
        ("-3", -3),
        ("0.9", 0.9),
        ("1e-3", 1e-3),
        ("bfloat16", "bfloat16"),
        ('"a,b"', "a,b"),
        ("'[x]'", "[x]"),
        ('"1"', "1"),
        ("True", "True"),
    ],
)
def test_values_are_typed_bool_then_int_then_float_then_str(text: str, value: object) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_clip_spec() -> None:
    spec = parse_model_spec("clip[path=ViT-B-32,pretrained=laion2b_s34b_b79k]")
    assert spec.head == "clip"
    assert dict(spec.args) == {"path": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}


def test_hub_id_with_args_and_quoted_commas() -> None:
    spec = parse_model_spec('Qwen/Qwen3-VL-2B-Instruct[dtype=bfloat16,tensor_parallel_size=1,note="a,[b]"]')
    assert spec.head == "Qwen/Qwen3-VL-2B-Instruct"
    assert dict(spec.args) == {"dtype": "bfloat16", "tensor_parallel_size": 1, "note": "a,[b]"}


def test_bare_head() -> None:
    assert parse_model_spec("clip").args == {}


def test_comma_list_keeps_bracketed_commas() -> None:
    text = 'clip[path=ViT-B-32,pretrained=openai],Qwen/Qwen2-VL-2B-Instruct[dtype="a,b"], hf[path=x]'
    assert split_top_level(text) == [
        "clip[path=ViT-B-32,pretrained=openai]",
        'Qwen/Qwen2-VL-2B-Instruct[dtype="a,b"]',
        "hf[path=x]",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clip[path=a", "one bracket pair"),
        ("clip]", "expected backend"),
        ("clip[path]", "not key=value"),
        ("clip[path=a,path=b]", "given twice"),
        ('clip[path="a]', "unclosed quote"),
        ("[path=a]", "expected backend"),
    ],
)
def test_malformed_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        parse_model_spec(text)


def test_toml_model_file(tmp_path: Path) -> None:
    file = tmp_path / "model.toml"
    file.write_text(
        'backend = "vllm"\n[args]\npath = "Qwen/Qwen2-VL-2B-Instruct"\nlimit_mm_per_prompt = { image = 1 }\n'
    )
    spec = parse_model_spec(str(file))
    assert spec.head == "vllm"
    assert spec.args["limit_mm_per_prompt"] == {"image": 1}


def test_toml_model_file_errors(tmp_path: Path) -> None:
    file = tmp_path / "model.toml"
    file.write_text('backend = "vllm"\nargz = 1\n')
    with pytest.raises(ModelSpecError, match=r"model\.toml: unknown key\(s\) argz"):
        parse_model_spec(str(file))
    with pytest.raises(ModelSpecError, match="cannot read model file"):
        parse_model_spec(str(tmp_path / "missing.toml"))


def test_model_file_that_is_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "m.toml"
    file.write_bytes(b'backend = "clip"\n# \xff\n')
    with pytest.raises(ModelSpecError, match=r"m\.toml: not UTF-8 text \(invalid start byte at byte 19\)"):
        parse_model_spec(str(file))
