"""The vLLM backend without vLLM: a stand-in engine records what the backend sends it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mill.backends.llm.args import VllmArgs, parse_args
from mill.backends.llm.letters import letter_tokens, render_letter_prompt
from mill.backends.llm.messages import render_prompt
from mill.backends.llm.vllm import VllmBackend, engine_kwargs, refuse_torchrun
from mill.core.backend import ModelInfo, RunContext
from mill.core.errors import BackendArgumentError
from mill.core.kinds.generative_mcq import McqTask
from mill.core.kinds.likelihood_mcq import LikelihoodMcqBackend, LikelihoodMcqTask
from mill.core.sample import SampleSource


class FakeLLM:
    """Answers each request with the number of requests in its call, and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], Any, dict[str, Any]]] = []

    def chat(self, requests: list[Any], sampling: Any, **kwargs: Any) -> list[Any]:
        self.calls.append((requests, sampling, kwargs))
        return [SimpleNamespace(outputs=[SimpleNamespace(text=f"answer {i}")]) for i in range(len(requests))]

    def generate(self, requests: list[Any], sampling: Any, **kwargs: Any) -> list[Any]:
        """One step per request: log-probability ``-token / 100 - i`` for each requested token of request ``i``,
        returned in reverse order (vLLM's order is its own), plus a sampled token that was not asked for."""
        self.calls.append((requests, sampling, kwargs))
        outputs = []
        for i in range(len(requests)):
            step = {
                token: SimpleNamespace(logprob=-token / 100 - i) for token in reversed(sampling["logprob_token_ids"])
            }
            step[0] = SimpleNamespace(logprob=-0.5)
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(logprobs=[step])]))
        return outputs


def _backend(llm: FakeLLM, context: RunContext, chunk_size: int, processor: Any = None) -> VllmBackend:
    info = ModelInfo(identity="fake", settings={"dtype": "bfloat16"}, resolved_args={})
    return VllmBackend(llm, dict, processor, info, chunk_size=chunk_size, num_workers=0, context=context)


def test_chunks_send_every_request_once(
    dataset: SampleSource, context: RunContext, make_task: Callable[..., McqTask]
) -> None:
    llm = FakeLLM()
    results = list(_backend(llm, context, chunk_size=3).run_mcq(make_task(max_new_tokens=5), dataset))
    assert [len(requests) for requests, _, _ in llm.calls] == [3, 3, 2]
    assert all(sampling == {"temperature": 0.0, "max_tokens": 5} for _, sampling, _ in llm.calls)
    assert all(kwargs["chat_template_content_format"] == "openai" for _, _, kwargs in llm.calls)
    assert [key for result in results for key in result.keys] == list(dataset.keys)
    assert [result.responses for result in results] == [
        ["answer 0", "answer 1", "answer 2"],
        ["answer 0", "answer 1", "answer 2"],
        ["answer 0", "answer 1"],
    ]


def test_vllm_sees_what_transformers_sees(
    tiny_vlm: Path,
    dataset: SampleSource,
    context: RunContext,
    make_task: Callable[..., McqTask],
    hf_requests: list[tuple[str, bytes]],
) -> None:
    """Same rendered prompt and same image per sample in both backends.

    vLLM shows the chat template an ``{"type": "image"}`` item where the request holds an
    ``image_pil`` part; the stand-in does that swap and renders with the model's own template.
    """
    from transformers import Qwen2VLProcessor

    task = make_task(max_new_tokens=1)
    llm = FakeLLM()
    list(_backend(llm, context, chunk_size=5).run_mcq(task, dataset))
    processor = Qwen2VLProcessor.from_pretrained(tiny_vlm)
    vllm_inputs = []
    for requests, _, _ in llm.calls:
        for request in requests:
            (message,) = request
            image = next(part["image_pil"] for part in message["content"] if part["type"] == "image_pil")
            content = [{"type": "image"} if part["type"] == "image_pil" else part for part in message["content"]]
            seen = [{**message, "content": content}]
            text = processor.apply_chat_template(seen, add_generation_prompt=True, tokenize=False)
            vllm_inputs.append((text, image.tobytes()))
    assert len(hf_requests) == len(dataset)
    assert vllm_inputs == hf_requests
    assert hf_requests[0][0] == render_prompt(processor, task.question(dataset.keys[0], 0).prompt)


def test_refuses_torchrun() -> None:
    with pytest.raises(BackendArgumentError) as error:
        refuse_torchrun({"WORLD_SIZE": "2"})
    message = str(error.value)
    assert "torchrun" in message and "tensor_parallel_size" in message and "data_parallel_size" in message
    refuse_torchrun({"WORLD_SIZE": "1"})
    refuse_torchrun({})


def test_load_refuses_torchrun_before_importing_vllm(
    monkeypatch: pytest.MonkeyPatch, context: RunContext, tiny_vlm: Path
) -> None:
    from mill.backends.llm.plugin import vllm_plugin

    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(BackendArgumentError, match="torchrun"):
        vllm_plugin.load({"path": str(tiny_vlm)}, context)


def test_engine_kwargs() -> None:
    args = parse_args(VllmArgs, {"path": "m", "max_pixels": 3136, "max_num_seqs": 64}, "vllm")
    kwargs = engine_kwargs(args)
    assert kwargs["model"] == "m" and kwargs["dtype"] == "bfloat16"
    assert kwargs["trust_remote_code"] is False and kwargs["enforce_eager"] is False
    assert kwargs["mm_processor_kwargs"] == {"max_pixels": 3136}
    assert kwargs["limit_mm_per_prompt"] == {"image": 1} and kwargs["max_num_seqs"] == 64
    assert "data_parallel_size" not in kwargs and "max_model_len" not in kwargs


def test_letter_likelihood_sends_rendered_prompts_and_reads_the_letter_tokens(
    tiny_vlm: Path, dataset: SampleSource, context: RunContext, likelihood_task: LikelihoodMcqTask
) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    llm = FakeLLM()
    backend = _backend(llm, context, chunk_size=5, processor=processor)
    assert isinstance(backend, LikelihoodMcqBackend)
    results = list(backend.run_likelihood_mcq(likelihood_task, dataset))
    assert [len(requests) for requests, _, _ in llm.calls] == [5, 3]
    prompts = [p for result in results for p in result.prompts]
    sent = [request for requests, _, _ in llm.calls for request in requests]
    assert [request["prompt"] for request in sent] == [render_letter_prompt(processor, p) for p in prompts]
    images = [image for batch in dataset.batches(batch_size=8, num_workers=0) for image in batch.images]
    assert [request["multi_modal_data"]["image"].tobytes() for request in sent] == [i.tobytes() for i in images]
    tokens = letter_tokens(processor.tokenizer, sent[0]["prompt"], likelihood_task.letters)
    ids = list(tokens.flat)
    expected_sampling = {
        "temperature": 0.0,
        "max_tokens": 1,
        "logprobs": len(ids),
        "logprob_token_ids": ids,
        "allowed_token_ids": ids,
    }
    assert all(sampling == expected_sampling for _, sampling, _ in llm.calls)
    # Request i of each call got -token/100 - i for each token: combined per letter in letter order.
    for result in results:
        for i, logprobs in enumerate(result.letter_logprobs):
            expected, _ = tokens.combine(np.array([[-token / 100 - i for token in ids]]))
            np.testing.assert_allclose(logprobs, expected[0], rtol=1e-12)


def test_letter_likelihood_needs_token_logprobs_from_vllm(
    tiny_vlm: Path, dataset: SampleSource, context: RunContext, likelihood_task: LikelihoodMcqTask
) -> None:
    from transformers import AutoProcessor

    def old_sampling_params(*, temperature: float, max_tokens: int, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"Unexpected keyword argument {next(iter(kwargs))!r}")
        return {"temperature": temperature}

    info = ModelInfo(identity="fake", settings={}, resolved_args={})
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    backend = VllmBackend(FakeLLM(), old_sampling_params, processor, info, chunk_size=4, num_workers=0, context=context)
    with pytest.raises(BackendArgumentError, match=r"log-probabilities of chosen tokens.*upgrade vLLM.*hf backend"):
        list(backend.run_likelihood_mcq(likelihood_task, dataset))
