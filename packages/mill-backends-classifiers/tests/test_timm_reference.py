"""Mill's timm backend against timm's own validation code path (validate.py's composition: ``resolve_data_config``,
``create_transform`` inside ``create_loader`` without the CUDA prefetcher, ``create_dataset`` over an image folder,
fp32): the same tiny random-weight model predicts the same class for every sample, on ImageNet and on the
ImageNet-A/R class subsets (the 1000 logits restricted to the subset's 200 before the argmax)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import timm
import torch
from timm.data import create_dataset, create_loader, resolve_data_config

from mill.backends.classifiers.tiny import TIMM_MODEL
from mill.core.registry import SpecRegistry
from mill.core.results import read_aggregate
from mill.testing.cli import Mill


def _reference(folder: Path, checkpoint: Path, overrides: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """Logits of every image under ``folder`` as timm's validation path computes them, and the files' order."""
    model = timm.create_model(TIMM_MODEL, pretrained=False, checkpoint_path=str(checkpoint)).eval()
    config = resolve_data_config(overrides, model=model, use_test_size=True)
    dataset = create_dataset(name="", root=str(folder), split="validation")
    loader = create_loader(
        dataset,
        input_size=config["input_size"],
        batch_size=8,
        use_prefetcher=False,
        interpolation=config["interpolation"],
        mean=config["mean"],
        std=config["std"],
        num_workers=0,
        crop_pct=config["crop_pct"],
        crop_mode=config["crop_mode"],
        device=torch.device("cpu"),
    )
    with torch.inference_mode():
        logits = torch.cat([model(images) for images, _ in loader])
    return logits, [Path(name).name for name in dataset.filenames()]


@pytest.mark.parametrize(
    ("benchmark", "overrides"),
    [
        ("imagenet", {}),
        # A test-time size and crop as a user gives them: both sides resolve the same config from them.
        ("imagenet", {"img_size": 128, "crop_pct": 1.0, "interpolation": "bicubic"}),
        ("imagenet_a", {}),
        ("imagenet_r", {}),
    ],
)
def test_predictions_equal_timms_validation_path(
    benchmark: str,
    overrides: dict[str, Any],
    timm_checkpoint: Path,
    labelled_images: Callable[..., list[tuple[int, Any]]],
    write_shards: Callable[..., Path],
    mill_in_process: Mill,
    tmp_path: Path,
) -> None:
    spec = SpecRegistry.discover().specs[benchmark]
    # 25 classes: the fixtures' on ImageNet, every 8th of the subset's on A/R.
    parents = range(1, 100, 4) if spec.parent_indices is None else spec.parent_indices[::8]
    samples = labelled_images(parents)
    folder = tmp_path / "folder"
    for index, (label, image) in enumerate(samples):
        (folder / f"{label:04d}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{label:04d}" / f"{index:05d}.png")
    logits, files = _reference(folder, timm_checkpoint, overrides)
    assert files == [f"{index:05d}.png" for index in range(len(samples))]  # timm reads them in the order written
    if spec.parent_indices is None:
        expected, golds = logits.argmax(dim=-1).tolist(), [label for label, _ in samples]
    else:
        expected = logits[:, list(spec.parent_indices)].argmax(dim=-1).tolist()
        golds = [spec.parent_indices.index(label) for label, _ in samples]  # the exports label subset positions
    # Equality says little if the random model predicts one class for everything (top-5 lists are compared too).
    assert len(set(expected)) >= 5

    layout = "wds_imagenet1k" if spec.parent_indices is None else "clip_benchmark"
    shards = write_shards(tmp_path / "shards", list(zip(golds, (image for _, image in samples), strict=True)), layout)
    arguments = ",".join(f"{key}={value}" for key, value in overrides.items())
    model = f"timm[name={TIMM_MODEL},checkpoint={timm_checkpoint},precision=fp32,device=cpu,num_workers=0,batch_size=7"
    model += f",{arguments}]" if arguments else "]"
    out = tmp_path / "results"
    done = mill_in_process(
        "eval", model, benchmark, "--data_dir", str(shards), "--output_dir", str(out),
        "--cache_dir", str(tmp_path / "cache"), "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.err
    rows = read_aggregate(out)
    # The classification variant is a classifier's default, so it also rolls up into the benchmark's row.
    assert set(rows.get_column("task").to_list()) == {f"{benchmark}_classifier", benchmark}
    (output_file,) = rows.get_column("output_file").unique().to_list()
    frame = pl.read_parquet(out / output_file).sort("key")
    assert frame.get_column("key").to_list() == [f"s{i:07d}" for i in range(len(samples))]
    assert frame.get_column("prediction").to_list() == expected
    assert frame.get_column("gold").to_list() == golds
    assert frame.get_column("prediction_label").to_list() == [spec.classnames[p] for p in expected]
    scores = logits if spec.parent_indices is None else logits[:, list(spec.parent_indices)]
    assert frame.get_column("top5").to_list() == scores.topk(5, dim=-1).indices.tolist()
    assert set(rows.get_column("metric").to_list()) == {"acc", "acc5"}
