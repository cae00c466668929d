"""The Python API: ``mill.core.evaluate`` on in-memory models gives what ``mill eval`` gives on the same
weights saved to disk, leaves the model as it found it, and takes every ``mill eval`` flag as a keyword."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import click
import polars as pl
import pytest

from mill.backends.clip import from_model as clip_from_model
from mill.backends.clip.tiny import write_tiny_model
from mill.backends.llm import from_model as vlm_from_model
from mill.cli.main import eval_command
from mill.core import evaluate
from mill.core.errors import BackendArgumentError
from mill.core.evaluation import PROGRAM_ONLY_KEYWORDS


def _tiny_clip(tmp_path: Path) -> tuple[Any, Any, Any]:
    """The conftest's tiny CLIP (same seed, so the same weights as its checkpoint), built in memory."""
    import open_clip

    tiny = write_tiny_model(tmp_path)
    open_clip.add_model_config(tiny.config_path)
    model, _, preprocess = open_clip.create_model_and_transforms(
        tiny.config_path.stem, pretrained=str(tiny.checkpoint_path), precision="fp32"
    )
    return model, preprocess, open_clip.get_tokenizer(tiny.config_path.stem)


def test_in_memory_clip_predicts_what_mill_eval_predicts_from_its_checkpoint(
    zero_shot: Any, shards: Path, tmp_path: Path
) -> None:
    model, preprocess, tokenizer = _tiny_clip(tmp_path)
    backend = clip_from_model(model, preprocess, tokenizer, name="tiny/epoch-1", precision="fp32")
    result = evaluate(backend, "imagenet", output_dir=None, cache_dir=None, data_dir=shards, allow_incomplete=True)
    on_disk = zero_shot.second.per_sample()
    assert result.samples["key"].to_list() == on_disk["key"].to_list()
    assert result.samples["prediction"].to_list() == on_disk["prediction"].to_list()
    assert result.samples["top5"].to_list() == on_disk["top5"].to_list()
    assert result.samples.columns == on_disk.columns
    assert result.metrics["acc"].value == pytest.approx(zero_shot.second.aggregate().filter(
        (pl.col("metric") == "acc") & (pl.col("task") == "imagenet"))["performance"][0])  # fmt: skip
    # The weights' identity is their content, not the checkpoint file's: another identity than mill eval's.
    assert result.manifest["model"] == "tiny/epoch-1"
    assert result.manifest["model_revision"].startswith("sha256:")
    assert result.manifest["model_revision"] != zero_shot.second.manifest()["model_revision"]
    assert result.manifest["run_info"]["classifier_cache_hit"] is False
    assert list(tmp_path.glob("**/aggregate.csv")) == []


def test_evaluate_leaves_the_model_as_it_found_it(shards: Path, tmp_path: Path) -> None:
    model, preprocess, tokenizer = _tiny_clip(tmp_path)
    model.train()
    frozen = {name for name, _ in list(model.named_parameters())[::2]}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    backend = clip_from_model(model, preprocess, tokenizer, precision="fp32")
    result = evaluate(backend, "imagenet", output_dir=None, cache_dir=None, data_dir=shards, limit=6)
    assert len(result.samples) == 6
    assert model.training
    assert {name for name, p in model.named_parameters() if not p.requires_grad} == frozen
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert all(parameter.equal(before[name]) for name, parameter in model.named_parameters())


def test_the_revision_changes_with_the_weights(shards: Path, tmp_path: Path) -> None:
    import torch

    model, preprocess, tokenizer = _tiny_clip(tmp_path)
    backend = clip_from_model(model, preprocess, tokenizer, precision="fp32")
    first = evaluate(backend, "imagenet", output_dir=None, cache_dir=None, data_dir=shards, limit=2)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    second = evaluate(backend, "imagenet", output_dir=None, cache_dir=None, data_dir=shards, limit=2)
    assert first.manifest["model_revision"] != second.manifest["model_revision"]


def test_in_memory_pure_precision_is_refused(tmp_path: Path) -> None:
    model, preprocess, tokenizer = _tiny_clip(tmp_path)
    with pytest.raises(BackendArgumentError, match=r"precision='pure_bf16' for an in-memory model"):
        clip_from_model(model, preprocess, tokenizer, precision="pure_bf16")


def test_in_memory_vlm_answers_what_mill_eval_answers_from_its_folder(
    mcq_run: Any, mcq_flags: tuple[str, ...], vlm_dir: Path, shards: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(vlm_dir)
    model.train()
    side = processor.tokenizer.padding_side
    limit, batch_size = int(mcq_flags[1]), int(mcq_flags[3])
    result = evaluate(
        vlm_from_model(model, processor),
        "imagenet",
        output_dir=tmp_path / "results",
        cache_dir=tmp_path / "cache",
        data_dir=shards,
        limit=limit,
        batch_size=batch_size,
    )
    on_disk = mcq_run.per_sample()
    for column in ("key", "prompt", "response", "parsed_letter", "prediction", "correct"):
        assert result.samples[column].to_list() == on_disk[column].to_list(), column
    assert result.manifest["model"] == "Qwen2VLForConditionalGeneration/in-memory"
    assert model.training and processor.tokenizer.padding_side == side
    # With an output directory the result is stored as mill eval stores it.
    stored = tmp_path / "results" / result.rows[0].output_file
    assert pl.read_parquet(stored).equals(result.samples)


def test_every_eval_flag_is_a_keyword_of_evaluate() -> None:
    flags = {param.name for param in eval_command.params if isinstance(param, click.Option)}
    flags = {"spec" if name == "spec_files" else name for name in flags}
    keywords = {
        name for name, p in inspect.signature(evaluate).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert flags == keywords - PROGRAM_ONLY_KEYWORDS
    arguments = {param.name for param in eval_command.params if isinstance(param, click.Argument)}
    assert arguments == {"model", "benchmark"} == set(list(inspect.signature(evaluate).parameters)[:2])


def test_every_example_in_the_library_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    page = (Path(__file__).resolve().parents[1] / "docs" / "library.md").read_text(encoding="utf-8")
    examples = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    assert len(examples) == 4
    monkeypatch.chdir(tmp_path)
    for example in examples:
        exec(compile(example, "docs/library.md", "exec"), {"__name__": "__docs__"})
    assert (tmp_path / "results" / "aggregate.csv").is_file()
    assert (tmp_path / "notebook-results" / "aggregate.csv").is_file()
