"""DataComp's classification datasets: the derived specs are what the script derives from the pinned clip_benchmark
package, and a spec scored by DataComp's main metric (mean per-class recall for Oxford-IIIT Pet) gives, sample by
sample, clip_benchmark's predictions on shards in the layout of DataComp's webdataset exports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import polars as pl
import pytest
import torch
from clip_benchmark.datasets.builder import build_dataset
from clip_benchmark.metrics.zeroshot_classification import accuracy, run_classification, zero_shot_classifier
from clip_benchmark.models.open_clip import load_open_clip

from mill.backends.clip.tiny import TinyModel
from mill.core.registry import SpecRegistry, builtin_spec_dir
from mill.core.results import read_aggregate
from mill.data.synthetic import synthetic_image, write_image_shards

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 2
#: Where a spec's open_clip figures start: scripts/derive_openclip_reported.py writes them, after what the spec
#: script derives (tests/test_openclip_reported.py).
REPORTED_BLOCK = "\n# open_clip's published figures"


def test_specs_are_what_the_script_derives_from_clip_benchmark(script: Callable[[str], Any]) -> None:
    derive = script("derive_datacomp_specs")
    derived = derive.derived_specs()
    assert len(derived) == len(derive.TASKS) == 12
    for file, text in derived.items():
        assert (builtin_spec_dir() / file).read_text(encoding="utf-8").split(REPORTED_BLOCK)[0] == text, file
    specs = SpecRegistry.discover(env={}).specs
    for key, _, name, size, n_classes, metric in derive.TASKS:
        spec = specs[name]
        assert (spec.dataset.n_samples, len(spec.classnames)) == (size, n_classes)
        assert spec.dataset.source == f"hf://datasets/djghosh/wds_{key.replace('/', '-')}_test"
        assert spec.headline_metric == ("acc" if metric == "acc1" else "mean_per_class_recall")


def _reference(export: Path, tiny_clip: TinyModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets as DataComp's eval_utils/wds_eval.py computes them: clip_benchmark's wds loader,
    classifier and classification, in float32."""
    open_clip.add_model_config(tiny_clip.config_path)
    model, transform, tokenizer = load_open_clip(tiny_clip.name, str(tiny_clip.checkpoint_path), device="cpu")
    model.eval()
    dataset = build_dataset("wds/vtab/pets", root=str(export), transform=transform, split="test", download=False)
    loader = torch.utils.data.DataLoader(dataset.batched(16), batch_size=None, shuffle=False, num_workers=0)
    classifier = zero_shot_classifier(model, tokenizer, dataset.classes, dataset.templates, "cpu", amp=False)
    logits, target = run_classification(model, classifier, loader, "cpu", amp=False)
    return logits, target


def _export(root: Path, labels: list[int]) -> Path:
    """Oxford-IIIT Pet shards in the export's layout, with the export's classnames.txt and templates file."""
    spec = SpecRegistry.discover(env={}).specs["pets"]
    rng = np.random.default_rng(3)
    n = len(spec.classnames)
    images = [synthetic_image(i % n, n_classes=n, size=64, rng=rng) for i in range(len(labels))]
    write_image_shards(
        root, zip(labels, images, strict=True), n_samples=len(labels), n_shards=2, layout="clip_benchmark"
    )
    (root / "classnames.txt").write_text("".join(f"{name}\n" for name in spec.classnames))
    (root / "zeroshot_classification_templates.txt").write_text("".join(f"{t}\n" for t in spec.templates))
    return root


def test_pets_per_sample_and_mean_per_class_recall_equal_clip_benchmarks(
    tiny_clip: TinyModel, clip_model: str, mill_in_process: Any, cache_dir: Path, tmp_path: Path
) -> None:
    # A random model's top-1 is near zero on any labels; so that the metrics say something, the labels are
    # chosen from its own first predictions: right on two samples in three, over classes of unequal size.
    n_samples = 37 * PER_CLASS
    first, _ = _reference(_export(tmp_path / "first", [0] * n_samples), tiny_clip)
    guessed = first.argmax(dim=1).tolist()
    labels = [p if i % 3 else (p + 1) % 37 for i, p in enumerate(guessed)]
    export = _export(tmp_path / "wds_vtab-pets_test", labels)

    logits, target = _reference(export, tiny_clip)
    predictions = logits.argmax(dim=1).numpy()
    golds = target.numpy()
    assert golds.tolist() == labels
    assert len(set(predictions.tolist())) >= 5  # equality says little if one class is predicted for all

    out = tmp_path / "results"
    done = mill_in_process(
        "eval", clip_model, "pets", "--data_dir", str(export), "--output_dir", str(out),
        "--cache_dir", str(cache_dir), "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.err
    rows = read_aggregate(out)
    (output_file,) = rows.get_column("output_file").unique().to_list()
    frame = pl.read_parquet(out / output_file)
    assert frame.get_column("gold").to_list() == golds.tolist()
    assert frame.get_column("prediction").to_list() == predictions.tolist()

    values = dict(zip(rows.get_column("metric").to_list(), rows.get_column("performance").to_list(), strict=True))
    (acc1, acc5) = accuracy(logits, target, topk=(1, 5))
    assert values["acc"] == pytest.approx(acc1) and values["acc5"] == pytest.approx(acc5)
    # sklearn's balanced_accuracy_score, which DataComp calls: the mean over classes present of their recall.
    recalls = [np.mean(predictions[golds == c] == c) for c in np.unique(golds)]
    assert values["mean_per_class_recall"] == pytest.approx(float(np.mean(recalls)))
    assert values["mean_per_class_recall"] != pytest.approx(values["acc"])  # the two are told apart
    headline = rows.filter(pl.col("task") == "pets").get_column("metric").to_list()
    assert headline[0] == "mean_per_class_recall"


def test_mill_ls_lists_the_datacomp_and_retrieval_specs(script: Callable[[str], Any], mill_in_process: Any) -> None:
    done = mill_in_process("ls")
    assert done.code == 0, done.err
    rows = {line.split("│")[1].strip(): line for line in done.out.splitlines() if line.count("│") > 3}
    for name in [task[2] for task in script("derive_datacomp_specs").TASKS]:
        assert "zero_shot" in rows[name], name
    for name in ("flickr30k", "mscoco"):
        assert "retrieval" in rows[name] and "mean_recall@1" in rows[name], name
    assert "mean_per_class_recall" in rows["pets"]
