"""The bundled demo, end to end: the `shapes` benchmark's shards and spec, the trained `mill-shapes` model's
accuracy through `mill eval` (which breaks if label order, templates or image normalisation go wrong), and the
MCQ variant's path with a tiny untrained VLM."""

from __future__ import annotations

import tarfile
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from mill.cli.main import cli
from mill.core.registry import SpecRegistry
from mill.data.shapes import SHAPE_CLASSES

#: The shipped checkpoint's zero-shot top-1 on `shapes` (stated in README.md and docs/quickstart.md).
STATED_ACCURACY = 0.9167
#: Room for numerical differences between machines and library versions (about 6 of the 300 images).
MARGIN = 0.02
DEMO_MODEL = "clip[path=mill-shapes,pretrained=mill-shapes]"


def _eval(tmp_path: Path, *args: str) -> pl.DataFrame:
    out = tmp_path / "results"
    flags = ["--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--quiet"]
    result = CliRunner().invoke(cli, ["eval", *args, *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return pl.read_csv(out / "aggregate.csv")


def test_spec_lists_the_rendered_classes_in_label_order() -> None:
    spec = SpecRegistry.discover(env={}).specs["shapes"]
    assert spec.classnames == tuple(c.name for c in SHAPE_CLASSES)
    # Neither colour nor shape alone decides the class.
    for attribute in ("colour", "shape"):
        values = [getattr(c, attribute) for c in SHAPE_CLASSES]
        assert all(values.count(value) >= 2 for value in values)
    assert {v.kind for v in spec.variants.values()} == {"zero_shot", "generative_mcq", "likelihood_mcq"}


def test_shipped_shards_have_the_imagenet_export_layout() -> None:
    spec = SpecRegistry.discover(env={}).specs["shapes"]
    shards = sorted((Path(spec.dataset.source) / "test").glob("*.tar"))
    assert len(shards) > 1
    assert sum(shard.stat().st_size for shard in shards) < 2_000_000
    labels: list[int] = []
    keys: list[str] = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, field = member.name.partition(".")
                if field == "cls":
                    keys.append(key)
                    labels.append(int(tar.extractfile(member).read()))  # type: ignore[union-attr]
                else:
                    assert field == "0.webp", member.name
    assert keys == [f"s{i:07d}" for i in range(spec.dataset.n_samples)]
    per_class = spec.dataset.n_samples // len(SHAPE_CLASSES)
    assert labels == [i // per_class for i in range(spec.dataset.n_samples)]  # class-ordered, balanced


def test_bundled_model_scores_the_stated_accuracy(tmp_path: Path) -> None:
    rows = _eval(tmp_path, DEMO_MODEL, "shapes")
    acc = rows.filter((pl.col("task") == "shapes") & (pl.col("metric") == "acc")).row(0, named=True)
    assert acc["model"] == "mill-shapes/mill-shapes"
    assert acc["n_samples"] == 300
    assert acc["performance"] >= STATED_ACCURACY - MARGIN, (
        f"the demo model scores {acc['performance']:.4f} on shapes, below the stated {STATED_ACCURACY} - {MARGIN}: "
        "check the label order, the templates and the preprocessing"
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mcq_variant_runs_with_a_tiny_untrained_vlm(tmp_path: Path) -> None:
    from mill.backends.llm.tiny import write_tiny_vlm

    vlm = write_tiny_vlm(tmp_path / "tiny-vlm")
    rows = _eval(tmp_path, f"{vlm}[dtype=float32]", "shapes", "--limit", "12")
    by_task = {(row["task"], row["metric"]): row for row in rows.iter_rows(named=True)}
    # A VLM serves the benchmark through its MCQ variant; its rollup keeps the MCQ task type.
    assert set(by_task) == {("shapes_mcq", "shapes_mcq_acc"), ("shapes_mcq", "unparsed_rate"), ("shapes", "acc")}
    assert by_task[("shapes", "acc")]["task_type"] == "generative_mcq"
    outputs = pl.read_parquet(tmp_path / "results" / by_task[("shapes", "acc")]["output_file"])
    assert outputs.height == 12
    assert outputs.get_column("options").list.len().unique().to_list() == [4]
