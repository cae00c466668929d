from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mill.backends.llm.plugin import hf_plugin
from mill.core.backend import ResumableBackend, RunContext
from mill.core.errors import BackendArgumentError
from mill.core.kinds.generative_mcq import McqBackend, McqBatchResult, McqTask
from mill.core.kinds.likelihood_mcq import LikelihoodMcqBackend, LikelihoodMcqBatchResult, LikelihoodMcqTask
from mill.core.mcq import McqQuestion
from mill.core.sample import SampleSource


def _load(model: Path, context: RunContext, **args: Any) -> McqBackend:
    backend = hf_plugin.load({"path": str(model), "dtype": "float32", **args}, context)
    assert isinstance(backend, McqBackend)
    return backend


def _responses(results: list[McqBatchResult]) -> dict[str, str]:
    return {key: response for result in results for key, response in zip(result.keys, result.responses, strict=True)}


def test_results_cover_every_sample_with_its_prompt(
    tiny_vlm: Path, dataset: SampleSource, context: RunContext, make_task: Callable[..., McqTask]
) -> None:
    task = make_task()
    results = list(_load(tiny_vlm, context, batch_size=4).run_mcq(task, dataset))
    assert [len(result.keys) for result in results] == [4, 4]
    for result in results:
        assert len(result.responses) == len(result.prompts) == len(result.golds) == len(result.shards)
        for key, gold, prompt in zip(result.keys, result.golds, result.prompts, strict=True):
            assert prompt == task.question(key, gold).prompt
    assert sorted(_responses(results)) == sorted(dataset.keys)


def test_runs_are_deterministic_and_batch_size_free(
    tiny_vlm: Path, dataset: SampleSource, context: RunContext, make_task: Callable[..., McqTask]
) -> None:
    task = make_task(max_new_tokens=6)
    first = _responses(list(_load(tiny_vlm, context, batch_size=4).run_mcq(task, dataset)))
    again = _responses(list(_load(tiny_vlm, context, batch_size=4).run_mcq(task, dataset)))
    one_by_one = _responses(list(_load(tiny_vlm, context, batch_size=1).run_mcq(task, dataset)))
    assert len(set(first.values())) > 1, "a constant answer would make these comparisons vacuous"
    assert first == again == one_by_one


def test_answers_depend_on_the_image(
    tiny_vlm: Path, dataset: SampleSource, context: RunContext, make_task: Callable[..., McqTask]
) -> None:
    def same_question(key: str, gold: int) -> McqQuestion:
        return McqQuestion(prompt="What is shown?", option_indices=(0, 1), letters=("A", "B"), gold_letter="A")

    results = list(_load(tiny_vlm, context).run_mcq(make_task(ask=same_question), dataset))
    assert len(set(_responses(results).values())) > len(dataset) // 2


def test_max_new_tokens_and_greedy_decoding(
    tiny_vlm: Path,
    dataset: SampleSource,
    context: RunContext,
    make_task: Callable[..., McqTask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import Qwen2VLForConditionalGeneration

    generate = Qwen2VLForConditionalGeneration.generate
    calls: list[tuple[int, bool]] = []

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        output = generate(self, *args, **kwargs)
        calls.append((output.shape[1] - kwargs["input_ids"].shape[1], kwargs["do_sample"]))
        return output

    monkeypatch.setattr(Qwen2VLForConditionalGeneration, "generate", spy)
    list(_load(tiny_vlm, context, batch_size=4).run_mcq(make_task(max_new_tokens=3), dataset))
    assert len(calls) == 2
    assert all(new_tokens <= 3 and do_sample is False for new_tokens, do_sample in calls)
    assert any(new_tokens == 3 for new_tokens, _ in calls)


def test_model_info_and_run_settings(tiny_vlm: Path, tmp_path: Path) -> None:
    context = RunContext(cache_dir=tmp_path, device="cpu", batch_size=3, num_workers=2)
    backend = _load(tiny_vlm, context, max_pixels=28 * 28 * 2, min_pixels=28 * 28, num_workers=0)
    info = backend.info
    assert info.identity == str(tiny_vlm)
    assert info.settings == {"dtype": "float32", "min_pixels": "784", "max_pixels": "1568"}
    assert info.resolved_args["batch_size"] == 3 and info.resolved_args["device"] == "cpu"
    assert info.resolved_args["num_workers"] == 0  # the spec's 0 wins over the run's 2
    assert info.resolved_args["trust_remote_code"] is False
    assert info.revision is not None and info.revision.startswith("local-")
    assert set(info.library_versions) == {"transformers", "torch"}
    assert info.device_type == "cpu"


def test_pixel_limits_reach_the_image_processor(
    tiny_vlm: Path,
    dataset: SampleSource,
    context: RunContext,
    make_task: Callable[..., McqTask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import Qwen2VLProcessor

    call = Qwen2VLProcessor.__call__
    grids: list[Any] = []

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        inputs = call(self, *args, **kwargs)
        grids.extend(inputs["image_grid_thw"].tolist())
        return inputs

    monkeypatch.setattr(Qwen2VLProcessor, "__call__", spy)
    list(_load(tiny_vlm, context, max_pixels=28 * 28).run_mcq(make_task(max_new_tokens=1), dataset))
    assert grids and all(grid == [1, 2, 2] for grid in grids)  # one 28x28 tile: 2x2 patches of 14 px


def test_pixel_limits_on_a_processor_without_them(tiny_vlm: Path, tmp_path: Path, context: RunContext) -> None:
    import shutil

    from transformers import CLIPImageProcessor

    model = tmp_path / "model"
    shutil.copytree(tiny_vlm, model)
    # A processor whose image processor cannot take pixel limits.
    (model / "processor_config.json").unlink()
    CLIPImageProcessor().save_pretrained(model)
    with pytest.raises(BackendArgumentError, match="min_pixels/max_pixels"):
        _load(model, context, max_pixels=784)


def test_a_batch_that_runs_out_of_memory_is_retried_at_half_size_and_the_run_goes_on_there(
    tiny_vlm: Path, dataset: SampleSource, context: RunContext, make_task: Callable[..., McqTask]
) -> None:
    import torch

    task = make_task(max_new_tokens=6)
    reference = list(_load(tiny_vlm, context, batch_size=8).run_mcq(task, dataset))
    backend = _load(tiny_vlm, context, batch_size=8)
    real = backend._model.generate  # type: ignore[attr-defined]
    computed: list[int] = []
    refused: list[int] = []

    def generate(**inputs: Any) -> Any:
        rows = len(inputs["input_ids"])
        if rows > 2:
            refused.append(rows)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        computed.append(rows)
        return real(**inputs)

    backend._model.generate = generate  # type: ignore[attr-defined]
    results = list(backend.run_mcq(task, dataset))
    assert _responses(results) == _responses(reference)  # every sample once, each with its own answer
    assert [r.keys for r in results] == [r.keys for r in reference]
    assert refused == [8, 4] and computed == [2, 2, 2, 2]
    # Each answer names the size it was generated at, in the order answered (what the engine records per sample).
    keys = [key for result in results for key in result.keys]
    assert backend.batch_sizes(keys) == [2] * 8
    assert backend.batch_sizes(keys[:1]) == [None]  # each is taken once
    info = backend.run_info()
    assert info["batch_size"] == 2
    assert info["out_of_memory_fallbacks"] == [{"from": 8, "to": 4}, {"from": 4, "to": 2}]
    resumed = _load(tiny_vlm, context, batch_size=8)
    assert isinstance(resumed, ResumableBackend)
    resumed.resume(info)
    assert resumed.run_info()["batch_size"] == 2


def _letter_results(results: list[LikelihoodMcqBatchResult]) -> dict[str, tuple[list[float], float]]:
    return {
        key: (list(logprobs), mass)
        for result in results
        for key, logprobs, mass in zip(result.keys, result.letter_logprobs, result.letter_mass, strict=True)
    }


def test_letter_likelihood_is_one_unpadded_forward_pass_per_sample(
    tiny_vlm: Path, dataset: SampleSource, context: RunContext, likelihood_task: LikelihoodMcqTask
) -> None:
    """Each sample's letter log-probabilities equal the model's next-token distribution after its own prompt
    alone (no padding, no batch), read off at the tokens "A" and " A" (and so on), whatever the batch size."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    backend = _load(tiny_vlm, context, batch_size=4)
    assert isinstance(backend, LikelihoodMcqBackend)
    batched = list(backend.run_likelihood_mcq(likelihood_task, dataset))
    assert [len(result.keys) for result in batched] == [4, 4]
    for result in batched:
        assert list(result.prompts) == [
            likelihood_task.question(k, g).prompt for k, g in zip(result.keys, result.golds, strict=True)
        ]
    scores = _letter_results(batched)
    singles = _letter_results(list(_load(tiny_vlm, context, batch_size=1).run_likelihood_mcq(likelihood_task, dataset)))
    assert sorted(scores) == sorted(singles) == sorted(dataset.keys)

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm, dtype=torch.float32).eval()
    vocab = processor.tokenizer.get_vocab()
    spellings = [[vocab[s] for s in (letter, f"Ġ{letter}") if s in vocab] for letter in likelihood_task.letters]
    for batch in dataset.batches(batch_size=1, num_workers=0):
        (key,), (gold,), (image,) = batch.keys, batch.labels, batch.images
        conversation = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": likelihood_task.question(key, gold).prompt}],
            }
        ]
        text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        with torch.inference_mode():
            logits = model(**processor(text=[text], images=[image], return_tensors="pt")).logits[0, -1]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        expected = [torch.logsumexp(logprobs[ids], dim=0).item() for ids in spellings]
        letter_logprobs, mass = scores[key]
        np.testing.assert_allclose(letter_logprobs, expected, atol=1e-5)
        np.testing.assert_allclose(singles[key][0], expected, atol=1e-5)
        assert mass == pytest.approx(float(np.exp(expected).sum()), abs=1e-6) and 0 < mass < 1
    # The distribution depends on the sample (image and options), so equal values above are no accident.
    assert len({tuple(np.round(logprobs, 4)) for logprobs, _ in scores.values()}) == len(dataset)
