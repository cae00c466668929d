"""Each family end to end on tiny random-weight models: through ``mill eval`` (torchvision by name, a transformers
folder given bare) and through ``evaluate()`` with the model in memory; label spaces checked before weights load;
bare ids routed by their config; and a model that cannot be fetched offline reported in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import timm
import torch
from PIL import Image
from torchvision.models import get_model, get_model_weights

from mill.backends.classifiers import from_model
from mill.backends.classifiers.backend import class_scores
from mill.backends.classifiers.families import ProcessorTransform
from mill.backends.classifiers.tiny import (
    TIMM_MODEL,
    TORCHVISION_MODEL,
    TORCHVISION_WEIGHTS,
    write_transformers_classifier,
)
from mill.core import evaluate
from mill.core.errors import BackendArgumentError
from mill.core.model_spec import parse_model_spec
from mill.core.plugins import resolve_model
from mill.core.results import read_aggregate
from mill.testing.cli import Mill

Images = Callable[..., list[tuple[int, Image.Image]]]


def _predictions(model: Any, transform: Callable[[Any], torch.Tensor], images: list[Image.Image]) -> list[int]:
    """Each image's top-1 over the 1000 outputs, computed directly, one image at a time."""
    with torch.inference_mode():
        outputs = [model(transform(image).unsqueeze(0)) for image in images]
    return [int((o if isinstance(o, torch.Tensor) else o.logits).argmax()) for o in outputs]


def _eval(mill: Mill, model: str, shards: Path, tmp_path: Path) -> pl.DataFrame:
    out = tmp_path / "results"
    done = mill(
        "eval", model, "imagenet", "--data_dir", str(shards), "--output_dir", str(out),
        "--cache_dir", str(tmp_path / "cache"), "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.err
    rows = read_aggregate(out)
    assert set(rows.get_column("task").to_list()) == {"imagenet_classifier", "imagenet"}
    (output_file,) = rows.get_column("output_file").unique().to_list()
    return pl.read_parquet(out / output_file).sort("key")


def _images(labelled_images: Images) -> list[Image.Image]:
    return [image for _, image in labelled_images()]


def test_torchvision_model_runs_through_mill_eval_with_its_weights_transforms(
    torchvision_checkpoint: Path, imagenet_shards: Path, labelled_images: Images, mill_in_process: Mill, tmp_path: Path
) -> None:
    spec = f"torchvision[name={TORCHVISION_MODEL},weights={TORCHVISION_WEIGHTS},checkpoint={torchvision_checkpoint}"
    frame = _eval(mill_in_process, spec + ",precision=fp32,device=cpu,num_workers=0]", imagenet_shards, tmp_path)
    model = get_model(TORCHVISION_MODEL, weights=None).eval()
    model.load_state_dict(torch.load(torchvision_checkpoint, weights_only=True))
    transform = get_model_weights(TORCHVISION_MODEL)[TORCHVISION_WEIGHTS].transforms()
    expected = _predictions(model, transform, _images(labelled_images))
    assert len(set(expected)) >= 2
    assert frame.get_column("prediction").to_list() == expected
    assert frame.get_column("gold").to_list() == [label for label, _ in labelled_images()]


def test_transformers_folder_given_bare_is_claimed_and_runs_with_its_image_processor(
    transformers_folder: Path, imagenet_shards: Path, labelled_images: Images, mill_in_process: Mill, tmp_path: Path
) -> None:
    assert resolve_model(parse_model_spec(str(transformers_folder))).backend == "hf_classifier"
    frame = _eval(mill_in_process, f"{transformers_folder}[device=cpu,num_workers=0]", imagenet_shards, tmp_path)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(transformers_folder).eval()
    transform = ProcessorTransform(AutoImageProcessor.from_pretrained(transformers_folder))
    expected = _predictions(model, transform, _images(labelled_images))
    assert len(set(expected)) >= 2
    assert frame.get_column("prediction").to_list() == expected


@pytest.mark.parametrize("family", ["torchvision", "transformers", "timm"])
def test_evaluate_scores_an_in_memory_classifier_and_leaves_it_as_found(
    family: str,
    torchvision_checkpoint: Path,
    transformers_folder: Path,
    timm_checkpoint: Path,
    imagenet_shards: Path,
    labelled_images: Images,
) -> None:
    transform: Callable[[Any], torch.Tensor] | None
    if family == "torchvision":
        model = get_model(TORCHVISION_MODEL, weights=None)
        model.load_state_dict(torch.load(torchvision_checkpoint, weights_only=True))
        transform = get_model_weights(TORCHVISION_MODEL)[TORCHVISION_WEIGHTS].transforms()
    elif family == "transformers":
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(transformers_folder)
        transform = ProcessorTransform(AutoImageProcessor.from_pretrained(transformers_folder))
    else:
        # No transform given: timm's validation transform is resolved from the model's pretrained config.
        model = timm.create_model(TIMM_MODEL, pretrained=False, checkpoint_path=str(timm_checkpoint))
        transform = None
    model.train()
    backend = from_model(model, transform, name=f"{family}/epoch-1")
    result = evaluate(
        backend, "imagenet", output_dir=None, cache_dir=None, data_dir=imagenet_shards, allow_incomplete=True
    )
    assert model.training  # left as found
    model.eval()
    reference = transform or timm.data.create_transform(
        **timm.data.resolve_data_config({}, model=model, use_test_size=True)
    )
    expected = _predictions(model, reference, _images(labelled_images))
    assert result.samples.sort("key")["prediction"].to_list() == expected
    assert set(result.metrics) == {"acc", "acc5"}
    assert result.manifest["model"] == f"{family}/epoch-1"
    assert result.manifest["model_revision"].startswith("sha256:")


def test_an_in_memory_model_without_transform_or_timm_config_is_refused(imagenet_shards: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1000))
    with pytest.raises(BackendArgumentError, match=r"has no timm pretrained config .* pass transform="):
        evaluate(
            from_model(model),
            "imagenet",
            output_dir=None,
            cache_dir=None,
            data_dir=imagenet_shards,
            allow_incomplete=True,
        )


def test_a_classifier_of_another_label_space_is_refused_before_its_weights_load(
    tmp_path: Path, imagenet_shards: Path, mill_in_process: Mill
) -> None:
    folder = write_transformers_classifier(tmp_path / "ten-classes", num_labels=10)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()  # loading them would fail: the refusal must come first
    done = mill_in_process(
        "eval", str(folder), "imagenet", "--data_dir", str(imagenet_shards), "--output_dir", str(tmp_path / "out"),
        "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == 2
    assert "scores 10 classes, but imagenet is scored over 1000" in done.err
    assert "Traceback" not in done.err


def test_timm_without_the_hub_fails_with_one_line_about_reaching_it(
    hub_cache: Path, imagenet_shards: Path, mill_in_process: Mill, tmp_path: Path
) -> None:
    done = mill_in_process(
        "eval", "timm[name=resnet50.a1_in1k]", "imagenet", "--data_dir", str(imagenet_shards),
        "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == 2
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert len(lines) == 1, done.err
    assert lines[0].startswith("error: timm backend: could not fetch the weights of resnet50.a1_in1k from the Hugging")
    assert "HF_HUB_OFFLINE" in lines[0]


def test_bare_ids_go_where_their_config_says(tmp_path: Path, transformers_folder: Path) -> None:
    timm_folder = tmp_path / "timm-model"
    timm_folder.mkdir()
    (timm_folder / "config.json").write_text('{"architecture": "resnet50", "num_classes": 1000}')
    vlm_folder = tmp_path / "vlm"
    vlm_folder.mkdir()
    (vlm_folder / "config.json").write_text('{"architectures": ["Qwen2VLForConditionalGeneration"]}')
    routed = {
        path: resolve_model(parse_model_spec(str(path))) for path in (transformers_folder, timm_folder, vlm_folder)
    }
    assert (routed[transformers_folder].backend, routed[transformers_folder].args) == (
        "hf_classifier",
        {"path": str(transformers_folder)},
    )
    assert (routed[timm_folder].backend, routed[timm_folder].args) == ("timm", {"name": f"local-dir:{timm_folder}"})
    assert routed[vlm_folder].backend == "hf"


def test_class_scores_restrict_subsets_and_take_each_groups_maximum() -> None:
    logits = torch.tensor(np.random.default_rng(0).normal(size=(6, 10)), dtype=torch.float32)
    assert torch.equal(class_scores(logits, None), logits)
    assert torch.equal(class_scores(logits, ((7,), (2,), (4,))), logits[:, [7, 2, 4]])
    groups = ((1, 5), (0,), (3, 8, 9))
    # wise-ft's project_logits: each ObjectNet class scores the max of its ImageNet classes' logits.
    expected = np.stack([logits.numpy()[:, list(group)].max(axis=1) for group in groups], axis=1)
    assert np.array_equal(class_scores(logits, groups).numpy(), expected)
