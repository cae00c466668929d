"""ImageNet zero-shot end to end: a tiny open_clip model through ``mill eval`` to aggregate rows, the
per-sample parquet and the manifest; the classifier cache; the completeness check; and the class
names and templates against open_clip's; SigLIP-style models from a folder and a seeded Hugging Face cache."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

from mill.backends.clip.tiny import write_tiny_siglip
from mill.cli.main import EXIT_USER_ERROR
from mill.core.registry import SpecRegistry
from mill.core.results import model_slug
from mill.testing.hub import seed_hub_cache

ZERO_SHOT_COLUMNS = [
    *("key", "shard", "gold", "gold_label", "prediction", "prediction_label", "top5", "correct"),
    "batch_size",  # the engine's: which batch size computed the sample
]


def test_aggregate_rows(zero_shot: Any, shape: Any) -> None:
    rows = zero_shot.first.aggregate()
    assert sorted(rows.get_column("metric").to_list()) == ["acc", "acc5", "mean_per_class_recall"]
    assert set(rows.get_column("task")) == {"imagenet"}
    assert set(rows.get_column("benchmark")) == {"imagenet"}
    assert set(rows.get_column("task_type")) == {"zero_shot"}
    assert set(rows.get_column("n_samples")) == {shape.n_samples}
    assert rows.get_column("stderr").null_count() == 0
    # --allow_incomplete: 60 of ImageNet's 50,000 samples, and the rows say so.
    assert rows.get_column("incomplete").all()
    assert set(rows.get_column("seed")) == {42}
    assert rows.get_column("limit").null_count() == rows.height


def test_per_sample_parquet(zero_shot: Any, shape: Any) -> None:
    run = zero_shot.first
    path = run.per_sample_path()
    identity = run.manifest()["model"]
    assert path.parent == run.output_dir / "outputs" / model_slug(identity)
    assert path.name.startswith("imagenet_0shot")
    frame = run.per_sample()
    assert frame.columns == ZERO_SHOT_COLUMNS
    assert frame.height == shape.n_samples
    assert frame["batch_size"].null_count() == 0  # clip batches through the out-of-memory fall-back
    keys = frame.get_column("key").to_list()
    assert keys == sorted(keys)
    classnames = SpecRegistry.discover().specs["imagenet"].classnames
    for row in frame.iter_rows(named=True):
        assert row["gold_label"] == classnames[row["gold"]]
        assert row["prediction_label"] == classnames[row["prediction"]]
        assert row["top5"][0] == row["prediction"]
        assert len(set(row["top5"])) == 5
        assert row["correct"] == (row["prediction"] == row["gold"])
    # A random-weight model still tells the synthetic classes apart somewhat.
    assert frame.get_column("prediction").n_unique() >= 5
    acc = run.aggregate().filter(pl.col("metric") == "acc").get_column("performance").item()
    assert acc == frame.get_column("correct").mean()


def test_manifest(zero_shot: Any, shape: Any) -> None:
    manifest = zero_shot.first.manifest()
    assert manifest["benchmark"] == "imagenet"
    assert manifest["variant"] == "imagenet"
    assert manifest["backend"] == "clip"
    assert manifest["seed"] == 42
    assert manifest["n_samples"] == shape.n_samples
    assert manifest["incomplete"] is True
    assert [shard["name"] for shard in manifest["shards"]] == ["test/0.tar", "test/1.tar", "test/2.tar"]
    assert manifest["run_id"] == zero_shot.first.aggregate().get_column("run_id").unique().item()


def test_second_identical_run_hits_the_classifier_cache(zero_shot: Any) -> None:
    first, second = zero_shot.first.manifest(), zero_shot.second.manifest()
    assert first["run_info"]["classifier_cache_hit"] is False
    assert second["run_info"]["classifier_cache_hit"] is True
    assert second["run_info"]["classifier_cache_key"] == first["run_info"]["classifier_cache_key"]
    # The cached classifier gives the same predictions as the one just built.
    columns = ["key", "prediction", "top5"]
    assert zero_shot.second.per_sample().select(columns).equals(zero_shot.first.per_sample().select(columns))


def test_incomplete_dataset_fails_without_allow_incomplete(mill_eval: Any, clip_model: str, shape: Any) -> None:
    run = mill_eval(clip_model, "imagenet")
    assert run.outcome.code == EXIT_USER_ERROR
    assert f"found {shape.n_samples} samples" in run.outcome.err
    assert "expected 50000" in run.outcome.err
    assert "--allow_incomplete" in run.outcome.err
    assert not (run.output_dir / "aggregate.csv").exists()


def test_imagenet_classnames_are_open_clips_with_two_renamed() -> None:
    classnames = SpecRegistry.discover().specs["imagenet"].classnames
    assert len(classnames) == 1000
    assert len(set(classnames)) == 1000
    differing = {
        i: name for i, (name, theirs) in enumerate(zip(classnames, IMAGENET_CLASSNAMES, strict=True)) if name != theirs
    }
    assert differing == {744: "projectile", 836: "sunglass"}


def test_imagenet_templates_are_openais_in_order() -> None:
    templates = SpecRegistry.discover().specs["imagenet"].templates
    assert len(templates) == 80
    assert list(templates) == [template("{c}") for template in OPENAI_IMAGENET_TEMPLATES]


def test_local_dir_siglip_model_end_to_end(mill_eval: Any, tmp_path_factory: Any, shape: Any) -> None:
    """A SigLIP-style model in open_clip's folder layout (``local-dir:``) runs through ``mill eval`` with its
    own tokenizer, and its rows and manifest name the folder and its content hash."""
    folder = write_tiny_siglip(tmp_path_factory.mktemp("siglip") / "tiny-siglip")
    run = mill_eval(f"clip[path=local-dir:{folder},dtype=float32]", "imagenet", "--allow_incomplete")
    assert run.outcome.code == 0, run.outcome.err
    rows = run.aggregate()
    assert set(rows.get_column("model")) == {"local-dir:tiny-siglip"}
    assert set(rows.get_column("n_samples")) == {shape.n_samples}
    predictions = run.per_sample().get_column("prediction")
    assert predictions.len() == shape.n_samples and predictions.n_unique() > 1
    manifest = run.manifest()
    assert manifest["model"] == "local-dir:tiny-siglip"
    assert manifest["resolved_args"]["path"] == f"local-dir:{folder}"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", manifest["model_revision"])


def test_hub_siglip_model_end_to_end(mill_eval: Any, hub_cache: Path, tmp_path: Path, shape: Any) -> None:
    """A SigLIP-style model in a seeded Hugging Face cache (``hf-hub:``, offline) runs through ``mill eval``; its
    rows name the repository and its manifest the commit ``main`` resolved to."""
    repo_id, commit = "mill-test/tiny-siglip", "c" * 40
    seed_hub_cache(
        hub_cache, write_tiny_siglip(tmp_path / "repo", tokenizer_name=repo_id), repo_id=repo_id, commit=commit
    )
    run = mill_eval(f"clip[path=hf-hub:{repo_id},dtype=float32]", "imagenet", "--allow_incomplete")
    assert run.outcome.code == 0, run.outcome.err
    rows = run.aggregate()
    assert set(rows.get_column("model")) == {f"hf-hub:{repo_id}"}
    assert set(rows.get_column("n_samples")) == {shape.n_samples}
    assert run.per_sample().get_column("prediction").n_unique() > 1
    manifest = run.manifest()
    assert manifest["model"] == f"hf-hub:{repo_id}"
    assert manifest["model_revision"] == f"hf-hub:{repo_id}@{commit}"
