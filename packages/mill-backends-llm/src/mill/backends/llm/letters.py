"""Letter likelihood, as both backends compute it: the prompt up to the generation prompt, the tokens that
spell each option letter there, and how their log-probabilities combine into one per letter.

A model answers "C" or " C" depending on its template and training; both are the same choice, so a letter's
log-probability is the logsumexp over its encodings. Only encodings that are one token right after the
generation prompt count: that one token is the whole answer, read off a single forward pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from attrs import frozen

from mill.backends.llm.generation import questioned_batches
from mill.backends.llm.messages import build_conversation
from mill.core.errors import BackendArgumentError
from mill.core.kinds.likelihood_mcq import LikelihoodMcqBatchResult, LikelihoodMcqTask
from mill.core.progress import Progress
from mill.core.sample import SampleBatch, SampleSource

#: How a letter may be spelled as the first token of an answer: alone, or after a space.
LETTER_FORMS = ("{}", " {}")

# A reasoning block the generation prompt opens and leaves open ("<think>\n"), as thinking-only templates do.
_OPEN_REASONING = re.compile(r"<(?P<tag>think|thinking|reasoning)>\s*\Z")

FloatArray = npt.NDArray[np.float64]
# (images, rendered texts, token ids) -> [samples, token ids] log-probabilities over the whole vocabulary
# of each token as the next one after each text.
TokenScorer = Callable[[Sequence[Any], list[str], Sequence[int]], FloatArray]


def render_letter_prompt(processor: Any, prompt: str) -> str:
    """The text a transformers processor's chat template makes of ``prompt``, ready for the answer's first token.

    A template with a no-thinking mode is rendered in it (``enable_thinking=False``). A template that opens
    a reasoning block anyway gets it closed empty, as Qwen3's no-thinking mode writes it
    (``<think>\\n\\n</think>\\n\\n``), so that the next token is the answer rather than reasoning.
    """
    conversation = build_conversation(prompt)
    text = str(
        processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False, **no_thinking_kwargs(processor)
        )
    )
    opened = opened_reasoning(text)
    if opened is not None:
        text = f"{text[: opened.start()]}<{opened['tag']}>\n\n</{opened['tag']}>\n\n"
    return text


def no_thinking_kwargs(processor: Any) -> dict[str, Any]:
    """The chat-template arguments of a template's no-thinking mode (``enable_thinking=False``), if it has one."""
    # Only templates that read the flag get it: transformers warns about template arguments it cannot place.
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    return {"enable_thinking": False} if "enable_thinking" in str(template) else {}


def opened_reasoning(text: str) -> re.Match[str] | None:
    """Where a rendered prompt ends by opening a reasoning block (``<think>\\n``), if it does."""
    return _OPEN_REASONING.search(text)


@frozen
class LetterTokens:
    """The token ids that spell each option letter as a whole answer; ``ids[i]`` are ``letters[i]``'s."""

    letters: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]

    @property
    def flat(self) -> tuple[int, ...]:
        """Every letter token once, in letter order: what a backend scores."""
        return tuple(token for tokens in self.ids for token in tokens)

    def combine(self, logprobs: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per-letter log-probabilities ``[samples, letters]`` (logsumexp over each letter's tokens) and the
        probability all letters hold ``[samples]``, from ``logprobs[samples, len(flat)]`` over the whole
        vocabulary."""
        per_letter = []
        start = 0
        for tokens in self.ids:
            per_letter.append(np.logaddexp.reduce(logprobs[:, start : start + len(tokens)], axis=1))
            start += len(tokens)
        letter_logprobs = np.stack(per_letter, axis=1)
        return letter_logprobs, np.exp(letter_logprobs).sum(axis=1)


def letter_tokens(tokenizer: Any, text: str, letters: Sequence[str]) -> LetterTokens:
    """The tokens that spell each of ``letters`` (in each of :data:`LETTER_FORMS`) right after ``text``.

    A form counts when the tokenizer encodes ``text`` followed by it as ``text``'s own tokens plus exactly
    one more; a form that takes two tokens (or merges with the end of ``text``) is not a one-token answer.
    Two forms that give the same token count once.

    Raises:
        BackendArgumentError: when some letter has no one-token form, so its probability cannot be read
            from one forward pass.
    """

    def encode(value: str) -> list[int]:
        return list(tokenizer(value, add_special_tokens=False)["input_ids"])

    base = encode(text)
    ids = []
    for letter in letters:
        tokens: dict[int, None] = {}
        for form in LETTER_FORMS:
            encoded = encode(text + form.format(letter))
            if len(encoded) == len(base) + 1 and encoded[: len(base)] == base:
                tokens[encoded[-1]] = None
        if not tokens:
            raise BackendArgumentError(
                f"this model's tokenizer spells the option letter {letter!r} after its generation prompt with "
                "more than one token, so likelihood_mcq cannot read the letter's probability from one forward "
                "pass; evaluate the generative multiple-choice variant instead"
            )
        ids.append(tuple(tokens))
    return LetterTokens(tuple(letters), tuple(ids))


@frozen
class LetterBatch:
    """One batch of letter-likelihood requests: the samples, the question asked about each (``prompts``), its
    rendered text (``texts``, ready for the answer's first token) and the tokens that spell the letters."""

    batch: SampleBatch
    prompts: list[str]
    texts: list[str]
    tokens: LetterTokens

    def result(self, logprobs: FloatArray) -> LikelihoodMcqBatchResult:
        """The batch's result from ``logprobs[samples, len(tokens.flat)]`` over the whole vocabulary."""
        if logprobs.shape != (len(self.texts), len(self.tokens.flat)):
            raise RuntimeError(
                f"backend returned log-probabilities of shape {logprobs.shape} for {len(self.texts)} texts"
            )
        letter_logprobs, mass = self.tokens.combine(logprobs)
        return LikelihoodMcqBatchResult(
            keys=list(self.batch.keys),
            shards=list(self.batch.shards),
            golds=list(self.batch.labels),
            prompts=self.prompts,
            letter_logprobs=letter_logprobs.tolist(),
            letter_mass=mass.tolist(),
        )


def letter_batches(
    task: LikelihoodMcqTask,
    data: SampleSource,
    processor: Any,
    *,
    batch_size: int,
    num_workers: int,
    progress: Progress,
) -> Iterator[LetterBatch]:
    """Every batch of ``data`` with ``task``'s questions rendered for letter likelihood.

    ``processor`` renders the prompts (:func:`render_letter_prompt`) and tokenizes the letters. The
    generation prompt ends every rendered text alike, so the letter tokens are found once, on the first.
    """
    tokens: LetterTokens | None = None
    for batch, prompts in questioned_batches(
        task.question, data, batch_size=batch_size, num_workers=num_workers, progress=progress
    ):
        texts = [render_letter_prompt(processor, prompt) for prompt in prompts]
        if tokens is None:
            tokens = letter_tokens(processor.tokenizer, texts[0], task.letters)
        yield LetterBatch(batch, prompts, texts, tokens)


def answer_by_letters(
    task: LikelihoodMcqTask,
    data: SampleSource,
    processor: Any,
    score: TokenScorer,
    *,
    batch_size: int,
    num_workers: int,
    progress: Progress,
) -> Iterator[LikelihoodMcqBatchResult]:
    """Score ``task``'s letters for every sample of ``data``, ``batch_size`` samples per call to ``score``
    (see :func:`letter_batches`)."""
    for item in letter_batches(
        task, data, processor, batch_size=batch_size, num_workers=num_workers, progress=progress
    ):
        yield item.result(score(item.batch.images, item.texts, item.tokens.flat))
