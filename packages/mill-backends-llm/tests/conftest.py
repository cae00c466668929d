"""Shared fixtures: a tiny random-weight VLM, a text-only model config and synthetic shards, built once per session."""

from __future__ import annotations

import os

# Tests never touch the network: set before huggingface_hub reads it at import.
os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mill.backends.llm.tiny import write_tiny_vlm
from mill.core.backend import RunContext
from mill.core.kinds.generative_mcq import McqTask
from mill.core.kinds.likelihood_mcq import LikelihoodMcqTask
from mill.core.mcq import McqQuestion, make_question_fn
from mill.core.sample import ReadOptions, SampleSource
from mill.data import open_dataset, synthetic_dataset_spec, write_synthetic_shards

CLASSNAMES = ("tench", "goldfish", "great white shark", "tiger shark")
N_SAMPLES = 8


def question(key: str, gold: int) -> McqQuestion:
    """A question whose options depend on the sample, so prompts differ between samples."""
    offset = int(key[-1]) % len(CLASSNAMES)
    order = tuple((offset + i) % len(CLASSNAMES) for i in range(len(CLASSNAMES)))
    letters = ("A", "B", "C", "D")
    options = " ".join(f"{letter}. {CLASSNAMES[i]}" for letter, i in zip(letters, order, strict=True))
    return McqQuestion(
        prompt=f"Which of these is shown in the image? {options} Answer with the letter.",
        option_indices=order,
        letters=letters,
        gold_letter=letters[order.index(gold)],
    )


TaskFactory = Callable[..., McqTask]


@pytest.fixture(scope="session")
def make_task() -> TaskFactory:
    """Builds an :class:`McqTask`; ``ask`` replaces the default per-sample question."""

    def make(max_new_tokens: int = 4, ask: Callable[[str, int], McqQuestion] = question) -> McqTask:
        return McqTask(
            benchmark="synthetic", variant="mcq", classnames=CLASSNAMES, max_new_tokens=max_new_tokens, question=ask
        )

    return make


@pytest.fixture(scope="session")
def likelihood_task() -> LikelihoodMcqTask:
    """The default question of :func:`make_task`, scored by letter likelihood."""
    return LikelihoodMcqTask(
        benchmark="synthetic", variant="mcq", classnames=CLASSNAMES, letters=("A", "B", "C", "D"), question=question
    )


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-qwen2-vl")


@pytest.fixture(scope="session")
def text_only_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Qwen2Config

    out = tmp_path_factory.mktemp("models") / "tiny-qwen2-text"
    config = Qwen2Config(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1
    )
    config.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SampleSource:
    root = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(root, n_classes=len(CLASSNAMES), per_class=N_SAMPLES // len(CLASSNAMES), n_shards=2)
    return open_dataset(
        synthetic_dataset_spec(root, n_samples=N_SAMPLES),
        n_classes=len(CLASSNAMES),
        options=ReadOptions(cache_dir=root / "cache"),
    )


@pytest.fixture
def context(tmp_path: Path) -> RunContext:
    return RunContext(cache_dir=tmp_path, device="cpu")


@pytest.fixture(scope="session")
def hf_requests(
    tiny_vlm: Path, dataset: SampleSource, make_task: TaskFactory, tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[str, bytes]]:
    """(rendered prompt, image bytes) per sample, as the hf backend hands them to ``tiny_vlm``'s processor.

    What vLLM receives is compared with this: the text and the PIL image given to the processor,
    not its pixel tensors, which may differ between processor implementations.
    """
    from transformers import Qwen2VLProcessor

    from mill.backends.llm.plugin import hf_plugin

    requests: list[tuple[str, bytes]] = []
    call = Qwen2VLProcessor.__call__

    def spy(self: Any, *args: Any, text: list[str], images: list[Any], **kwargs: Any) -> Any:
        requests.extend((t, image.tobytes()) for t, image in zip(text, images, strict=True))
        return call(self, *args, text=text, images=images, **kwargs)

    context = RunContext(cache_dir=tmp_path_factory.mktemp("hf-cache"), device="cpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Qwen2VLProcessor, "__call__", spy)
        backend = hf_plugin.load({"path": str(tiny_vlm), "dtype": "float32", "batch_size": 4}, context)
        list(backend.run_mcq(make_task(max_new_tokens=1), dataset))  # type: ignore[attr-defined]
    return requests


#: The imagenet protocol's prompt (specs/imagenet.toml), which the vllm tests ask with: the tiny model's choices
#: vary with it, so agreement between backends means something.
PROTOCOL_PROMPT = """Which of these categories best describes the image?
{options}
Answer with the letter of the correct option."""
PROTOCOL_MAX_NEW_TOKENS = 6


@pytest.fixture(scope="session")
def mcq_task(make_task: TaskFactory) -> McqTask:
    """The fixture's classes as the protocol asks about them: every class an option, in a seeded order."""
    classnames = make_task().classnames
    question = make_question_fn(0, "mcq", classnames, len(classnames), PROTOCOL_PROMPT)
    return McqTask("synthetic", "mcq", classnames, PROTOCOL_MAX_NEW_TOKENS, question)


@pytest.fixture(scope="session")
def letters_task(mcq_task: McqTask) -> LikelihoodMcqTask:
    """:func:`mcq_task`'s questions, scored by letter likelihood."""
    letters = tuple("ABCDEFGHIJ"[: len(mcq_task.classnames)])
    return LikelihoodMcqTask("synthetic", "mcq", mcq_task.classnames, letters, mcq_task.question)
