"""Multiple-choice questions: deriving the options, rendering the prompt, parsing and scoring the answer.

Everything here is pure and seeded. A sample's question depends only on the run seed, the variant
name, the sample key and its gold class, so every backend and every worker process asks the same
question, and a rerun reproduces it exactly.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence
from typing import Literal

from attrs import field, frozen


@frozen
class McqQuestion:
    """One rendered multiple-choice question for a sample."""

    prompt: str
    option_indices: tuple[int, ...]
    letters: tuple[str, ...]
    gold_letter: str


UnparsablePolicy = Literal["wrong", "random"]
"""What an answer that names no option counts as: always wrong, or a seeded random letter."""

_ALPHABET = string.ascii_uppercase
OPTIONS_PLACEHOLDER = "{options}"


def option_letters(n_options: int) -> tuple[str, ...]:
    """The letters labelling ``n_options`` options: ``("A", "B", ...)``.

    Raises:
        ValueError: if ``n_options`` is not between 1 and 26.
    """
    if not 1 <= n_options <= len(_ALPHABET):
        raise ValueError(f"n_options must be between 1 and {len(_ALPHABET)}, got {n_options}")
    return tuple(_ALPHABET[:n_options])


def option_seed(seed: int, variant: str, key: str) -> str:
    """The string seeding a sample's option draw: ``"{seed}|{variant}|{key}"``."""
    return f"{seed}|{variant}|{key}"


def derive_options(seed: int, variant: str, key: str, gold: int, n_options: int, n_classes: int) -> tuple[int, ...]:
    """Class indices of a sample's options, in letter order; ``gold`` is among them exactly once.

    This reproduces a published protocol and must not change: ``n_options - 1`` distractors are
    drawn without replacement from the other classes with ``random.Random(option_seed(...))``,
    the gold class is appended, and the same generator shuffles the list.

    Raises:
        ValueError: if ``n_options`` is below 1 or above ``n_classes``, or ``gold`` is not a class.
    """
    if n_options < 1:
        raise ValueError(f"n_options must be at least 1, got {n_options}")
    if n_options > n_classes:
        raise ValueError(f"n_options ({n_options}) exceeds the number of classes ({n_classes})")
    if not 0 <= gold < n_classes:
        raise ValueError(f"gold class {gold} is outside 0..{n_classes - 1} (sample {key!r})")
    rng = random.Random(option_seed(seed, variant, key))
    # The candidate list is materialised, not a range, to mirror the protocol line for line.
    distractors = rng.sample([i for i in range(n_classes) if i != gold], n_options - 1)
    options = [*distractors, gold]
    rng.shuffle(options)
    return tuple(options)


def render_prompt(template: str, option_names: Sequence[str]) -> str:
    """``template`` with ``{options}`` replaced by one ``"A) name"`` line per option, joined by newlines.

    Only the ``{options}`` placeholder is substituted; other braces in the template stay as written.

    Raises:
        ValueError: if the template has no ``{options}`` placeholder, or there are no options.
    """
    if OPTIONS_PLACEHOLDER not in template:
        raise ValueError(f"MCQ template has no {OPTIONS_PLACEHOLDER} placeholder: {template!r}")
    letters = option_letters(len(option_names))
    block = "\n".join(f"{letter}) {name}" for letter, name in zip(letters, option_names, strict=True))
    return template.replace(OPTIONS_PLACEHOLDER, block)


def _names_tuple(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(names)


def _positive(_instance: object, _attribute: object, value: int) -> None:
    if value < 1:
        raise ValueError(f"n_options must be at least 1, got {value}")


@frozen
class QuestionMaker:
    """Builds a sample's :class:`McqQuestion` from its key and gold class; fills ``McqTask.question``.

    A frozen module-level class rather than a closure, so a task can be pickled to worker processes.

    Raises (on construction):
        ValueError: if there are fewer classes than options, more than 26 options, or the template
            lacks ``{options}``.
    """

    seed: int
    variant: str
    classnames: tuple[str, ...] = field(converter=_names_tuple)
    n_options: int = field(validator=_positive)
    template: str

    def __attrs_post_init__(self) -> None:
        if self.n_options > len(self.classnames):
            raise ValueError(
                f"variant {self.variant!r}: n_options ({self.n_options}) exceeds the number of classes "
                f"({len(self.classnames)})"
            )
        option_letters(self.n_options)
        if OPTIONS_PLACEHOLDER not in self.template:
            raise ValueError(f"variant {self.variant!r}: MCQ template has no {OPTIONS_PLACEHOLDER} placeholder")

    def __call__(self, key: str, gold: int) -> McqQuestion:
        """The question for sample ``key`` whose gold class index is ``gold``."""
        indices = derive_options(self.seed, self.variant, key, gold, self.n_options, len(self.classnames))
        letters = option_letters(self.n_options)
        prompt = render_prompt(self.template, [self.classnames[i] for i in indices])
        return McqQuestion(
            prompt=prompt,
            option_indices=indices,
            letters=letters,
            gold_letter=letters[indices.index(gold)],
        )


def make_question_fn(
    seed: int, variant: str, classnames: Sequence[str], n_options: int, template: str
) -> Callable[[str, int], McqQuestion]:
    """A pure, picklable ``(key, gold) -> McqQuestion`` for ``McqTask.question``.

    Raises:
        ValueError: as :class:`QuestionMaker`.
    """
    return QuestionMaker(
        seed=seed, variant=variant, classnames=tuple(classnames), n_options=n_options, template=template
    )


# --- Answer parsing -------------------------------------------------------------------------------

# An explicit marker, then any run of punctuation, markdown and linking words, then one letter that
# stands alone. The letter may be lowercase here ("answer: c"), though not when a word follows it
# ("the answer is a dog"); see _is_letter_use.
_MARKER = re.compile(
    r"\b(?:final\s+answer|(?:correct|right|best)\s+(?:answer|option|choice)|answer)\b"
    r"(?:[\s:=*_\"'`(\[\-–—]|is\b|would\s+be\b|should\s+be\b|will\s+be\b|must\s+be\b|option\b|letter\b|choice\b)*"
    r"(?P<letter>[A-Za-z])(?![\w\-])(?!['’]\w)(?!\.\w)",
    re.IGNORECASE,
)

# A capital letter standing alone: not inside a word ("CAT", "Cobra"), a contraction ("I'm") or an
# abbreviation ("U.S."). Whether it is an option is decided by _is_letter_use.
_LONE_CAPITAL = re.compile(r"(?<![\w\-])(?<!\w\.)(?P<letter>[A-Z])(?![\w\-])(?!['’]\w)(?!\.\w)")

# "option c" / "letter (c)": the only place a lowercase letter counts without a marker.
_NAMED_LOWERCASE = re.compile(r"\b(?:option|letter)\s*\(?(?P<letter>[a-z])(?![\w\-])(?!['’]\w)(?!\.\w)", re.IGNORECASE)

_FOLLOWING_WORD = re.compile(r"[ \t]+(?P<word>[A-Za-z]+)")

# Words that may follow a letter used as a name ("A is wrong", "Answer: A because ..."); after
# anything else, a capital A begins a noun phrase ("A dog sits") and a lowercase letter is a word.
_LETTER_CONTINUATIONS = frozenset(
    {"is", "was", "because", "since", "seems", "looks", "appears", "matches", "fits", "and", "or", "but"}
)


def _is_letter_use(response: str, match: re.Match[str]) -> bool:
    """Whether a lone letter is used as an option label rather than as an English word.

    "I" followed by a word is the pronoun ("I think ..."); "A" or a lowercase letter followed by a
    word is an article ("A close-up of ...", "the answer is a dog") unless that word is one that
    follows a letter used as a name ("A is wrong", "A because ..."). Any other capital counts.
    """
    letter = match.group("letter")
    if letter not in "AI" and letter.isupper():
        return True
    following = _FOLLOWING_WORD.match(response, match.end())
    if following is None:
        return True
    if letter == "I":
        return False
    return following.group("word").lower() in _LETTER_CONTINUATIONS


def _name_pattern(name: str) -> re.Pattern[str]:
    words = name.split()
    body = r"\s+".join(re.escape(word) for word in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _option_mentions(response: str, option_names: Sequence[str]) -> list[tuple[int, int, int]]:
    """Every ``(start, end, option)`` where the response names an option, longest names winning.

    A mention lying inside a longer option's mention is dropped: "sea lion" names only the sea lion,
    not also the lion.
    """
    mentions = [
        (m.start(), m.end(), option)
        for option, name in enumerate(option_names)
        if name.strip()
        for m in _name_pattern(name).finditer(response)
    ]
    return [
        (start, end, option)
        for start, end, option in mentions
        if not any(
            other_start <= start and end <= other_end and (other_end - other_start) > (end - start)
            for other_start, other_end, _ in mentions
        )
    ]


def _last_label(
    response: str,
    patterns: Sequence[re.Pattern[str]],
    letters: frozenset[str],
    option_text: Sequence[tuple[int, int]],
) -> str | None:
    """The last letter any of ``patterns`` finds that is a valid option letter used as a label.

    Letters inside option text ("Model T", "vitamin C") belong to the text, not to a label.
    """
    last: tuple[int, str] | None = None
    for pattern in patterns:
        for match in pattern.finditer(response):
            letter = match.group("letter").upper()
            position = match.start("letter")
            if (
                letter in letters
                and not any(start <= position < end for start, end in option_text)
                and _is_letter_use(response, match)
                and (last is None or position > last[0])
            ):
                last = (position, letter)
    return None if last is None else last[1]


def parse_answer(response: str, option_names: Sequence[str], letters: Sequence[str]) -> str | None:
    """The option letter a free-text response chooses, or ``None`` if it chooses none.

    ``option_names[i]`` is the text of option ``letters[i]``. Evidence is weighed in this order,
    and the first kind present decides:

    1. an explicit marker ("Answer: C", "the answer is (C)", "Final answer: **c**"); the last wins;
    2. a letter standing alone or delimited ("C", "(C)", "C.", "**C**", "[C]", "Option C"); the
       last wins. An "A" or "I" followed by a word is the article or pronoun ("A dog sits",
       "I think"), and capitals inside words do not count;
    3. the text of exactly one option, as a whole phrase, case-insensitive; a name inside a longer
       named option ("lion" in "sea lion") counts only as the longer one. Two options named: None.

    In 1 and 2, letters outside ``letters`` and letters inside option text are ignored. Refusals
    ("I cannot determine", "I'm not sure") contain none of these and give ``None``. The letter
    returned is the matching element of ``letters``.

    Raises:
        ValueError: if ``option_names`` and ``letters`` differ in length.
    """
    if len(option_names) != len(letters):
        raise ValueError(f"{len(option_names)} option names for {len(letters)} letters")
    by_upper = {letter.upper(): letter for letter in letters}
    valid = frozenset(by_upper)
    mentions = _option_mentions(response, option_names)
    option_text = [(start, end) for start, end, _ in mentions]

    for patterns in ((_MARKER,), (_LONE_CAPITAL, _NAMED_LOWERCASE)):
        label = _last_label(response, patterns, valid, option_text)
        if label is not None:
            return by_upper[label]

    named = {option for _, _, option in mentions}
    return letters[named.pop()] if len(named) == 1 else None


# --- Scoring --------------------------------------------------------------------------------------


@frozen
class McqScore:
    """How one response was graded.

    ``parsed_letter`` is what the response chose (None if nothing); ``prediction`` is the letter
    graded, which under the ``random`` policy is a seeded guess when nothing was parsed.
    """

    parsed_letter: str | None
    prediction: str | None
    correct: bool


def unparsable_guess(response: str, letters: Sequence[str], seed: int) -> str:
    """The letter the ``random`` policy assigns to an unparsable ``response``.

    Seeded by ``"{seed}|parse_multi_choice|{response}"`` so the guess is the same in every run
    with this seed, and agrees with the published protocol.
    """
    return random.Random(f"{seed}|parse_multi_choice|{response}").choice(list(letters))


def score_response(
    response: str,
    question: McqQuestion,
    option_names: Sequence[str],
    policy: UnparsablePolicy,
    seed: int,
) -> McqScore:
    """Grade ``response`` to ``question``, whose options are named ``option_names`` in letter order.

    Under policy ``"wrong"`` an unparsable response has no prediction and is wrong; under
    ``"random"`` it is graded on :func:`unparsable_guess`, and may be right by chance.

    Raises:
        ValueError: for an unknown policy, or option names that do not match the letters.
    """
    if policy not in ("wrong", "random"):
        raise ValueError(f"unknown unparsable policy {policy!r}; expected 'wrong' or 'random'")
    parsed = parse_answer(response, option_names, question.letters)
    prediction = parsed
    if parsed is None and policy == "random":
        prediction = unparsable_guess(response, question.letters, seed)
    return McqScore(parsed_letter=parsed, prediction=prediction, correct=prediction == question.gold_letter)
