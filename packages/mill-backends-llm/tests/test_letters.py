"""Letter likelihood's pure parts: the prompt up to the answer, the letter tokens, and how they combine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mill.backends.llm.letters import LetterTokens, letter_tokens, render_letter_prompt
from mill.backends.llm.messages import render_prompt
from mill.core.errors import BackendArgumentError

QWEN3_LIKE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n...<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


class TemplateProcessor:
    """A processor whose chat template renders a fixed generation prompt; records the arguments it got."""

    def __init__(self, chat_template: str, rendered: str) -> None:
        self.chat_template = chat_template
        self.rendered = rendered
        self.kwargs: list[dict[str, Any]] = []

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> str:
        self.kwargs.append(kwargs)
        return self.rendered


class CharTokenizer:
    """One token per character, except the spellings in ``merges``, each one token of its own."""

    def __init__(self, merges: tuple[str, ...] = ()) -> None:
        self.merges = merges

    def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
        assert add_special_tokens is False
        ids: list[int] = []
        position = 0
        while position < len(text):
            merge = next((m for m in self.merges if text.startswith(m, position)), None)
            if merge is not None:
                ids.append(1000 + self.merges.index(merge))
                position += len(merge)
            else:
                ids.append(ord(text[position]))
                position += 1
        return {"input_ids": ids}


@pytest.fixture(scope="module")
def processor(tiny_vlm: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlm)


def test_a_plain_template_renders_as_for_generation(processor: Any) -> None:
    text = render_letter_prompt(processor, "Which one?\nA) cat\nB) dog")
    assert text == render_prompt(processor, "Which one?\nA) cat\nB) dog")
    assert text.endswith("<|im_start|>assistant\n")


def test_no_thinking_mode_is_asked_of_templates_that_have_one() -> None:
    with_mode = TemplateProcessor(QWEN3_LIKE, "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_letter_prompt(with_mode, "q") == "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert with_mode.kwargs[0]["enable_thinking"] is False
    assert with_mode.kwargs[0]["add_generation_prompt"] is True
    without = TemplateProcessor("{{ messages }}", "<|im_start|>assistant\n")
    render_letter_prompt(without, "q")
    assert "enable_thinking" not in without.kwargs[0]


@pytest.mark.parametrize(
    ("rendered", "expected"),
    [
        ("<|im_start|>assistant\n<think>\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        ("<|im_start|>assistant\n<think>", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        ("<start_of_turn>model\n<reasoning>\n  ", "<start_of_turn>model\n<reasoning>\n\n</reasoning>\n\n"),
        # Already closed, or never opened: left as rendered.
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        ("<|im_start|>assistant\nthink about <think>it", "<|im_start|>assistant\nthink about <think>it"),
    ],
)
def test_an_open_reasoning_block_is_closed_empty(rendered: str, expected: str) -> None:
    assert render_letter_prompt(TemplateProcessor("{{ messages }}", rendered), "q") == expected


def test_letter_tokens_of_the_tiny_tokenizer(processor: Any) -> None:
    tokenizer = processor.tokenizer
    text = render_letter_prompt(processor, "Which one?")
    tokens = letter_tokens(tokenizer, text, "ABCDEFGHIJ")
    assert tokens.letters == tuple("ABCDEFGHIJ")
    for letter, ids in zip(tokens.letters, tokens.ids, strict=True):
        # Byte-level BPE: "A" and "ĠA" (the letter after a space) where the vocabulary has the latter.
        spellings = [letter, f"Ġ{letter}"]
        expected = [tokenizer.convert_tokens_to_ids(s) for s in spellings if s in tokenizer.get_vocab()]
        assert list(ids) == expected
        assert {tokenizer.decode([i]).strip() for i in ids} == {letter}
    assert any(len(ids) == 2 for ids in tokens.ids) and any(len(ids) == 1 for ids in tokens.ids)
    assert tokens.flat == tuple(i for ids in tokens.ids for i in ids)


def test_only_one_token_answers_count() -> None:
    # "B" and " B" are one token each; " A" is two (space, A); "\nC" merges with the text's last character,
    # so neither "C" nor " C" is a token of its own after this text.
    tokenizer = CharTokenizer(merges=(" B", "\nC"))
    assert letter_tokens(tokenizer, "answer:\n", "AB").ids == ((ord("A"),), (ord("B"), 1000))
    with pytest.raises(BackendArgumentError, match="'C'"):
        letter_tokens(tokenizer, "answer:\n", "ABC")


def test_a_letter_without_a_one_token_spelling_is_refused() -> None:
    # Every "Z" is spelled as two tokens: a byte-fallback-like pair.
    class SplitZ(CharTokenizer):
        def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
            ids = super().__call__(text, add_special_tokens)["input_ids"]
            return {"input_ids": [part for i in ids for part in ((90, 91) if i == ord("Z") else (i,))]}

    with pytest.raises(BackendArgumentError, match=r"'Z' .* more than one token.*generative multiple-choice"):
        letter_tokens(SplitZ(), "answer: ", "AZ")


def test_two_spellings_of_one_token_count_once() -> None:
    # A tokenizer that drops spaces spells "A" and " A" alike.
    class NoSpaces(CharTokenizer):
        def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
            return super().__call__(text.replace(" ", ""), add_special_tokens)

    assert letter_tokens(NoSpaces(), "answer:", "AB").ids == ((ord("A"),), (ord("B"),))


def test_combine_takes_logsumexp_per_letter_and_the_total_mass() -> None:
    tokens = LetterTokens(letters=("A", "B"), ids=((5, 6), (7,)))
    logprobs = np.array([np.log([0.1, 0.2, 0.3]), [np.log(0.01), -np.inf, np.log(0.5)]])
    per_letter, mass = tokens.combine(logprobs)
    np.testing.assert_allclose(np.exp(per_letter), [[0.3, 0.3], [0.01, 0.5]], rtol=1e-12)
    np.testing.assert_allclose(mass, [0.6, 0.51], rtol=1e-12)
