"""The classifier backends' arguments and what each plugin answers before loading anything: unknown models and
tags named with the published ones, the preprocessing overrides parsed as validate.py's flags, head sizes read
from configuration."""

from __future__ import annotations

import pytest

from mill.backends.classifiers import TimmArgs, hf_classifier_plugin, timm_plugin, torchvision_plugin
from mill.core.errors import BackendArgumentError, ModelNotFoundError


def test_timm_overrides_parse_as_validate_py_reads_them() -> None:
    args = TimmArgs.from_mapping({"name": "resnet50.a1_in1k", "img_size": 224, "crop_pct": 0.95, "mean": "0.5,0.5,0.5"})
    overrides = {"img_size": 224, "crop_pct": 0.95, "crop_mode": None, "interpolation": None}
    assert args.data_overrides() == {**overrides, "mean": (0.5, 0.5, 0.5), "std": None}
    assert args.run.precision.name == "fp32"  # validate.py's default, not clip's amp_bf16
    assert TimmArgs.from_mapping({"name": "x", "mean": [0.1, 0.2, 0.3]}).mean == (0.1, 0.2, 0.3)  # a TOML list


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": "x", "mean": "0.5,0.5"}, r"mean='0.5,0.5' must be three numbers"),
        ({"name": "x", "crop_mode": "zoom"}, r"crop_mode='zoom' must be one of center, squash, border"),
        ({"name": "x", "dtype": "float16", "precision": "fp32"}, r"dtype='float16' means precision='amp'"),
        ({"path": "x"}, r"unknown argument\(s\) 'path'"),
    ],
)
def test_timm_argument_mistakes_name_the_argument(args: dict[str, object], message: str) -> None:
    with pytest.raises(BackendArgumentError, match=message):
        TimmArgs.from_mapping(args)


def test_capabilities_read_head_sizes_from_configuration_only() -> None:
    assert timm_plugin.capabilities({"name": "resnet50.a1_in1k"}).n_outputs == 1000
    assert torchvision_plugin.capabilities({"name": "resnet50", "weights": "IMAGENET1K_V2"}).n_outputs == 1000
    assert timm_plugin.capabilities({"name": "resnet50.a1_in1k"}).serves("classification")


@pytest.mark.parametrize(
    ("plugin", "args", "message"),
    [
        (timm_plugin, {"name": "resnet5O.a1_in1k"}, r"no model 'resnet5O.a1_in1k'; did you mean resnet50.a1_in1k"),
        (
            timm_plugin,
            {"name": "resnet50.zz"},
            r"resnet50 has no pretrained tag 'zz'; its tags are: .*resnet50.a1_in1k",
        ),
        (torchvision_plugin, {"name": "resnet50", "weights": "V3"}, r"resnet50 has no weights 'V3'; .*IMAGENET1K_V2"),
        (torchvision_plugin, {"name": "resnet05", "weights": "V1"}, r"torchvision has no model 'resnet05'"),
        (hf_classifier_plugin, {"path": "/nonexistent/model"}, r"could not be read from the Hugging Face Hub"),
    ],
)
def test_unknown_models_are_named_before_anything_loads(plugin: object, args: dict[str, str], message: str) -> None:
    with pytest.raises(ModelNotFoundError, match=message):
        plugin.capabilities(args)  # type: ignore[attr-defined]


def test_torchvision_needs_weights_for_its_preprocessing() -> None:
    with pytest.raises(BackendArgumentError, match=r"missing argument 'weights'; the weights decide the preprocessing"):
        torchvision_plugin.capabilities({"name": "resnet50"})
