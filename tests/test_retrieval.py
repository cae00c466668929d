"""Zero-shot retrieval end to end: the bundled demo CLIP on shards in the layout of clip_benchmark's retrieval
exports, through ``mill eval``, against clip_benchmark's own webdataset loader and ``zeroshot_retrieval.evaluate``
(per query and per metric); and the specs and models the kind refuses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import polars as pl
import pytest
import torch
from clip_benchmark.datasets.builder import build_dataset
from clip_benchmark.metrics import zeroshot_retrieval
from clip_benchmark.models.open_clip import load_open_clip
from PIL import Image

import mill.backends.clip
from mill.cli.main import EXIT_USER_ERROR
from mill.core.registry import SpecRegistry
from mill.core.results import read_aggregate
from mill.data.shapes import SHAPE_CLASSES, render_shape
from mill.data.synthetic import write_caption_shards

Mill = Callable[..., Any]
DEMO = Path(mill.backends.clip.__file__).parent / "demo"
DEMO_MODEL = "clip[path=mill-shapes,pretrained=mill-shapes,precision=fp32]"
PER_CLASS = 3
TEMPLATES = ("a photo of a {c}", "a drawing of a {c}", "a {c} on a grey background")


def _samples() -> Iterator[tuple[Image.Image, list[str]]]:
    """Shapes with one to three captions each, every caption different (no two captions tie exactly)."""
    rng = np.random.default_rng(7)
    for index in range(len(SHAPE_CLASSES) * PER_CLASS):
        label = index % len(SHAPE_CLASSES)
        name = SHAPE_CLASSES[label].name
        captions = [f"{TEMPLATES[(index + j) % 3].format(c=name)}, number {index}" for j in range(1 + index % 3)]
        yield render_shape(label, rng), captions


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flickr_export")
    write_caption_shards(root, _samples(), n_samples=len(SHAPE_CLASSES) * PER_CLASS, n_shards=2)
    return root


@pytest.fixture(scope="module")
def reference(export: Path, monkeypatch_module: pytest.MonkeyPatch) -> tuple[dict[str, float], dict[str, list[bool]]]:
    """clip_benchmark's metrics and per-query hits on the export, read by its own webdataset loader as its CLI
    reads a ``wds/`` retrieval dataset, with the demo model in float32 (``--no_amp``).

    Per-query hits are the ``recall_at_k`` values ``evaluate`` computes (positive when a positive is within the
    top k), recorded as it passes them on: ``text_to_image@k`` per caption, ``image_to_text@k`` per image."""
    open_clip.add_model_config(DEMO / "mill-shapes.json")
    model, transform, tokenizer = load_open_clip("mill-shapes", str(DEMO / "mill-shapes.pt"), device="cpu")
    model.eval()
    dataset = build_dataset(
        "wds/flickr30k", root=str(export), transform=transform, split="test", task="zeroshot_retrieval"
    )
    loader = torch.utils.data.DataLoader(dataset.batched(8), batch_size=None, shuffle=False, num_workers=0)
    recorded: list[torch.Tensor] = []
    original = zeroshot_retrieval.batchify

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        result: torch.Tensor = original(*args, **kwargs)
        recorded.append(result)
        return result

    monkeypatch_module.setattr(zeroshot_retrieval, "batchify", recording)
    metrics = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    hits = {}
    # evaluate ranks images for every caption, then captions for every image, for each k in turn.
    for (k, direction), values in zip(
        [(k, d) for k in (1, 5, 10) for d in ("text_to_image", "image_to_text")], recorded, strict=True
    ):
        hits[f"{direction}@{k}"] = (values > 0).tolist()
    return metrics, hits


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def mill_run(export: Path, tmp_path_factory: pytest.TempPathFactory, mill_in_process: Mill) -> Path:
    out = tmp_path_factory.mktemp("retrieval_results")
    done = mill_in_process(
        "eval", DEMO_MODEL, "flickr30k", "--data_dir", str(export), "--output_dir", str(out),
        "--cache_dir", str(tmp_path_factory.mktemp("cache")), "--allow_incomplete", "--batch_size", "5", "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.err
    return out


def _per_sample(out: Path) -> pl.DataFrame:
    (output_file,) = read_aggregate(out).get_column("output_file").unique().to_list()
    return pl.read_parquet(out / output_file)


def test_per_query_hits_equal_clip_benchmarks(mill_run: Path, reference: Any) -> None:
    _, hits = reference
    frame = _per_sample(mill_run)
    samples = list(_samples())
    assert frame.get_column("key").to_list() == [f"s{i:07d}" for i in range(len(samples))]
    assert frame.get_column("captions").to_list() == [captions for _, captions in samples]
    image_ranks = np.array(frame.get_column("image_to_text_rank").to_list())
    text_ranks = np.array(frame.get_column("text_to_image_ranks").explode().to_list())
    for k in (1, 5, 10):
        assert (image_ranks <= k).tolist() == hits[f"image_to_text@{k}"], k
        assert (text_ranks <= k).tolist() == hits[f"text_to_image@{k}"], k
    # Equality says little unless the ranks vary: the demo model retrieves some queries first, some not.
    assert 0 < (image_ranks == 1).mean() < 1 and 0 < (text_ranks == 1).mean() < 1
    assert len(set(image_ranks.tolist())) > 3 and len(set(text_ranks.tolist())) > 3


def test_metrics_equal_clip_benchmarks_with_directions_named(mill_run: Path, reference: Any) -> None:
    metrics, _ = reference
    rows = read_aggregate(mill_run).filter(pl.col("task") == "flickr30k")
    values = dict(zip(rows.get_column("metric").to_list(), rows.get_column("performance").to_list(), strict=True))
    assert set(values) == {
        "mean_recall@1",
        *(f"{d}_recall@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)),
    }
    for k in (1, 5, 10):
        # clip_benchmark's image_retrieval_recall ranks images for a caption: text to image.
        assert values[f"text_to_image_recall@{k}"] == pytest.approx(metrics[f"image_retrieval_recall@{k}"], abs=1e-6)
        assert values[f"image_to_text_recall@{k}"] == pytest.approx(metrics[f"text_retrieval_recall@{k}"], abs=1e-6)
    mean = (metrics["image_retrieval_recall@1"] + metrics["text_retrieval_recall@1"]) / 2
    assert values["mean_recall@1"] == pytest.approx(mean, abs=1e-6)
    assert rows.get_column("stderr").min() > 0
    assert set(rows.get_column("task_type").to_list()) == {"retrieval"}


def test_specs_read_clip_benchmarks_retrieval_exports() -> None:
    specs = SpecRegistry.discover(env={}).specs
    for name, images, source in (
        ("flickr30k", 1000, "hf://datasets/clip-benchmark/wds_flickr30k"),
        ("mscoco", 5000, "hf://datasets/clip-benchmark/wds_mscoco_captions"),
    ):
        spec = specs[name]
        assert (spec.dataset.n_samples, spec.dataset.source, spec.dataset.text_member) == (images, source, "txt")
        assert spec.dataset.label_member is None and spec.classnames == () and spec.templates == ()
        assert [v.kind for v in spec.variants.values()] == ["retrieval"]
        assert spec.headline_metric == "mean_recall@1"


def test_a_model_that_cannot_embed_text_is_refused_up_front(
    mill_in_process: Mill, vlm_model: str, export: Path, tmp_path: Path
) -> None:
    done = mill_in_process(
        "eval", vlm_model, "flickr30k", "--data_dir", str(export), "--output_dir", str(tmp_path / "out"),
        "--allow_incomplete", "--quiet",
    )  # fmt: skip
    assert done.code == EXIT_USER_ERROR
    assert "flickr30k needs retrieval" in done.err
    assert "Use a CLIP model (clip[...]) for zero_shot and retrieval variants" in done.err
    assert not (tmp_path / "out" / "aggregate.csv").exists()


def test_a_retrieval_variant_in_a_spec_with_classes_is_refused(tmp_path: Path, mill_in_process: Mill) -> None:
    spec = tmp_path / "mixed.toml"
    spec.write_text(
        'name = "mixed"\ndescription = "d"\nseed = 1\nheadline_metric = "mean_recall@1"\n[dataset]\nsource = "x"\n'
        'split = "test"\nimage_member = "webp"\nlabel_member = "cls"\nn_samples = 2\n'
        '[classes]\ncount = 2\nnames = ["a", "b"]\n[templates]\nlist = ["a {c}"]\n'
        '[variants.mixed]\nkind = "retrieval"\nmetric = "mean_recall@1"\n'
    )
    done = mill_in_process("ls", "--spec", str(spec))
    assert done.code == EXIT_USER_ERROR
    assert f"{spec}: variants.mixed.kind: retrieval ranks captions, not classes" in done.err
