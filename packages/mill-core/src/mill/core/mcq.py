"""Multiple-choice questions: deriving the options, rendering the prompt, parsing the answer (grading it is the
generative kind's, :mod:`mill.core.kinds.generative_mcq`).

Everything here is pure and seeded. A sample's question depends only on the run seed, the variant
name, the sample key and its gold class, so every backend and every worker process asks the same
question, and a rerun reproduces it exactly.
"""

from __future__ import annotations

import ast
import functools
import json
import random
import re
import string
import unicodedata
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


def question_problems(n_options: int, prompt: str, n_classes: int, max_options: int) -> list[tuple[str, str]]:
    """Problems of a multiple-choice variant's ``n_options`` and ``prompt``, as (key, message) pairs.

    ``n_options`` must be 2 to ``max_options`` and at most ``n_classes`` (one letter per option);
    ``prompt`` must hold the ``{options}`` placeholder. Empty when both are valid.
    """
    problems = []
    if not 2 <= n_options <= min(max_options, n_classes):
        problems.append(
            (
                "n_options",
                f"expected 2 to {min(max_options, n_classes)} (at most the {n_classes} classes and {max_options} "
                f"letters, one letter each), got {n_options}",
            )
        )
    if OPTIONS_PLACEHOLDER not in prompt:
        problems.append(("prompt", f"must contain the placeholder {OPTIONS_PLACEHOLDER}"))
    return problems


# --- Answer parsing -------------------------------------------------------------------------------

PARSER_VERSION = 3
"""The version of :func:`parse_answer`'s rules. Bump it whenever the letter parsed from some response can
change: stored results record it, so a re-score knows which results were parsed by older rules."""

# Scripts written without spaces between words (Han, kana, Hangul, CJK punctuation). A letter beside
# them stands alone ("答案是C", "正解はCです"); beside any other word character (Latin, Cyrillic, digits,
# "_") it is part of a word. _W is "a word character that joins a letter to a word".
_CJK = "\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3200-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff"
_W = rf"[^\W{_CJK}]"
_BEFORE = rf"(?<!{_W})(?<!-)"
_AFTER = rf"(?!{_W}|-)(?!['’]{_W})(?!\.{_W})"

# Words that announce the answer, in the languages VLMs fall into; a marker is followed by any run of
# punctuation, markdown and linking words, then one letter that stands alone. The letter may be
# lowercase here ("answer: c"), though not when a word follows it ("the answer is a dog").
_MARKER_WORDS = (
    r"final\s+answer|(?:correct|right|best)\s+(?:answer|option|choice)|answer"
    r"|respuesta|resposta|r[ée]ponse|risposta|antwort|antwoord|l[öo]sung|ответ|jawaban|cevap|yan[ıi]t"
    r"|đáp\s+án|câu\s+trả\s+lời"
)
_CJK_MARKERS = r"答案|答え|正解|回答|정답|답변|답|答|我选择|我选|选择|選擇|选|選"
_LINKING_WORDS = (
    r"is|would\s+be|should\s+be|will\s+be|must\s+be|option|letter|choice"
    r"|es|est|ist|lautet|é|è|sería|seria|serait|wäre|sarebbe|la|le|l'|die|der|das"
    r"|correct[aeo]?|corretta|richtige|final[e]?|это"
)
_CJK_LINKING = r"应该是|應該是|应为|應為|是|为|為|は|が|은|는|이"
_MARKER = re.compile(
    rf"(?:(?<!{_W})(?:{_MARKER_WORDS})(?!{_W})|{_CJK_MARKERS})"
    rf"(?:[\s:=*_\"'`(\[\-–—【「『《]|(?:{_LINKING_WORDS})(?!{_W})|{_CJK_LINKING})*"
    rf"(?P<letter>[A-Za-z]){_AFTER}",
    re.IGNORECASE,
)

# A capital letter standing alone: not inside a word ("CAT", "Cobra"), a contraction ("I'm") or an
# abbreviation ("U.S."). Whether it is an option is decided by _is_letter_use.
_LONE_CAPITAL = re.compile(rf"{_BEFORE}(?<!{_W}\.)(?P<letter>[A-Z]){_AFTER}")

# "option c" / "letter (c)" / "选项c": the only place a lowercase letter counts without a marker.
_NAMED_LOWERCASE = re.compile(
    rf"(?<!{_W})(?:option|letter|opción|opção|选项|選項)\s*\(?(?P<letter>[a-z]){_AFTER}", re.IGNORECASE
)

# A response that is nothing but one letter, in either case, with punctuation or brackets around it.
_BARE_LETTER = re.compile(r"[\W_]*(?P<letter>[A-Za-z])[\W_]*")

# An option label as the prompt writes it ("C)") or close to it ("(C)", "C.", "C:").
_ITEM_LABEL = re.compile(rf"(?<!{_W})(?:\((?P<paren>[A-Za-z])\)|(?P<bare>[A-Za-z])[).:])[ \t]*")
_LINE_LEAD = re.compile(r"[ \t\-•>#]*")

_FOLLOWING_WORD = re.compile(r"[ \t]+(?P<word>[A-Za-z]+)")

# Words that may follow a letter used as a name ("A is wrong", "Answer: A because ..."); after
# anything else, a capital A begins a noun phrase ("A dog sits") and a lowercase letter is a word.
_LETTER_CONTINUATIONS = frozenset(
    {"is", "was", "because", "since", "seems", "looks", "appears", "matches", "fits", "and", "or", "but"}
)

# Reasoning blocks: "<think>...</think>", and the "◁think▷...◁/think▷" some models emit.
_REASONING_OPEN = re.compile(r"[<◁]\s*(?:think|thinking|reasoning)\s*[>▷]", re.IGNORECASE)
_REASONING_CLOSE = re.compile(r"[<◁]\s*/\s*(?:think|thinking|reasoning)\s*[>▷]", re.IGNORECASE)

# Markdown: struck-through text is withdrawn; emphasis marks ("**C**", "_c_") are only decoration.
# An underscore inside a word ("final_answer") is part of the word.
_STRUCK = re.compile(r"~~.*?~~", re.DOTALL)
_EMPHASIS = re.compile(rf"\*+|(?<!{_W})_+|_+(?!{_W})")

# Structured answers: LaTeX "\boxed{C}" (one level of nested braces, "\boxed{\text{C}}") and flat
# JSON or Python-literal objects whose answer field holds the choice ({"answer": "C"}).
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{(?P<body>(?:[^{}]|\{[^{}]*\})*)\}")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+\s*|[{}$]")
_FLAT_OBJECT = re.compile(r"\{[^{}]*\}")
# Field names tried in turn: an answer field by a usual name, then any name with "answer" in it
# ("answer_explanation" only when there is no "answer"), then choice-like names.
_ANSWER_KEYS = (
    re.compile(r"(?:final[\s_-]?)?answer(?:[\s_-]?letter)?|choice|option|letter|selected[\s_-]?option", re.IGNORECASE),
    re.compile(r".*answer.*", re.IGNORECASE),
    re.compile(r".*(?:choice|option|letter|select).*", re.IGNORECASE),
)


# Options named by number or position: "Option 3", "answer #3", "the third one", "the last option".
_ORDINAL_WORDS = {
    word: number
    for number, words in enumerate(
        (
            ("first", "1st"),
            ("second", "2nd"),
            ("third", "3rd"),
            ("fourth", "4th"),
            ("fifth", "5th"),
            ("sixth", "6th"),
            ("seventh", "7th"),
            ("eighth", "8th"),
            ("ninth", "9th"),
            ("tenth", "10th"),
        ),
        start=1,
    )
    for word in words
}
_ORDINAL = re.compile(
    rf"(?<!{_W})(?:(?:option|choice|answer|number|no\.|\#)\s*[:#]?\s*(?P<number>\d{{1,2}})(?![\d.,]\d)(?!{_W})"
    rf"|(?:the\s+)?(?P<word>{'|'.join(_ORDINAL_WORDS)}|last)\s+(?:one|option|choice|answer|item)s?(?!{_W}))",
    re.IGNORECASE,
)

# What may separate letters output in a row ("A B C", "A, B, C", "(A)(B)(C)").
_RUN_GAP = re.compile(r"[\W_]{0,4}")

# Negation before a reference, reaching over articles and other references ("it isn't a tench or a goldfish",
# "neither A nor B", "rather than the lion"); "§" marks where references were.
_NEGATORS = (
    r"not|never|neither|nor|rather\s+than|instead\s+of|unlike|rules?\s+out|ruled\s+out|ruling\s+out"
    r"|exclud(?:e|es|ed|ing)|eliminat(?:e|es|ed|ing)|except"
    # Comparisons: the option the answer is measured against is not the answer.
    r"|than|compared\s+(?:to|with)|similar\s+to|resembl(?:es|ing)|thought\s+it\s+was"
)
_NEGATED_BEFORE = re.compile(
    rf"(?:(?<!{_W})(?:{_NEGATORS})|n['’]t(?:\s+(?:think|believe)\s+(?:it|this|that)(?:['’]s|\s+is))?"
    # Doubt is no answer: "I can't tell whether it's a goldfish", "not sure if this is a tench".
    rf"|(?:n['’]t|not|un)\s*(?:tell|know|say|determine|sure|certain)\s+(?:if|whether)\s+(?:it|this|that)(?:['’]s|\s+is))"
    rf"(?:[\s,()§*\"'“”]|(?<!{_W})(?:an?|the|or|nor|either|option|letter|choice|answer)(?!{_W}))*$"
    # A letter in brackets after a few words of its option's name: "it's not a Persian (H)".
    rf"|(?<!{_W})(?:{_NEGATORS})\s+(?:[A-Za-z]+\s+){{1,3}}\($",
    re.IGNORECASE,
)
# Negation after a reference: "B is wrong", "B (lion) isn't right", "C is not correct".
_NEGATED_AFTER = re.compile(
    r"[\s,()§*:\-–—]*(?:"
    r"(?:is|are|was|seems|looks|appears|would\s+be|can\s*be|could\s+be|must\s+be)\s+(?:definitely\s+|clearly\s+)?not(?!\w)"
    r"|(?:is|are|was|does|do|would|could|can|ca)n['’]t"
    r"|(?:(?:is|are|seems|looks)\s+)?(?:definitely\s+|clearly\s+)?"
    r"(?:wrong|incorrect|unlikely|ruled\s+out|excluded|eliminated|impossible)(?!\w)"
    # A counterfactual ("a tench would be greener"), or a first impression taken back ("a tench, but it's a
    # goldfish").
    r"|\s+would\s+(?:be|have|look|appear|show)(?!\w)"
    r"|,?\s*but\s+(?:it|this|that)(?:['’]s|\s+is)\s+(?:actually\s+|really\s+|in\s+fact\s+)?(?:an?\s+|the\s+)?§)",
    re.IGNORECASE,
)
# Between a letter and its own option's name ("tench (A)", "C) sea lion", "B - the lion").
_APPOSITION = re.compile(r"[\s()\[\]:.\-–—,*]*(?:(?:an?|the)\s+)?[\s()\[\]]*", re.IGNORECASE)
# Between two options offered as alternatives: "B or C", "B/C", "a tench (A) or maybe a goldfish (B)".
_HEDGE_GAP = re.compile(
    r"[\s,?()\[\]*]*(?:or|/|vs\.?|versus)[\s,]*(?:(?:maybe|perhaps|possibly|probably|even)\s+)?"
    r"[\s(\[]*(?:(?:an?|the)\s+)?(?:(?:option|letter|choice)\s+)?[\s(\[]*",
    re.IGNORECASE,
)
# An option offered as a second possibility: "it could also be a tiger shark (D)", "C is also possible".
_ALSO_BEFORE = re.compile(
    r"(?:could|might|may|can)\s+(?:also|equally|just\s+as\s+well)\s+be\s+(?:an?\s+|the\s+)?(?:option\s+)?[\s(]*$",
    re.IGNORECASE,
)
_ALSO_AFTER = re.compile(
    r"[\s()§,]*(?:(?:is|are|seems|looks)\s+)?(?:also\s+|equally\s+)?(?:possible|plausible)(?!\w)"
    r"|[\s()§]*(?:is|are|seems|looks)\s+(?:also|equally)\s+likely",
    re.IGNORECASE,
)
# Letters listed as answers together: "A, B", "A and B", "A & B".
_LETTER_ONLY = re.compile(r"[A-Za-z]")
_LIST_GAP = re.compile(r"[\s()\[\]*]*(?:,|&|\+|and)[\s(\[]*", re.IGNORECASE)
_AND_GAP = re.compile(
    r"[\s,()\[\]*]*and[\s(\[]*(?:(?:an?|the)\s+)?(?:(?:option|letter|choice)\s+)?[\s(\[]*", re.IGNORECASE
)
_BETWEEN = re.compile(
    r"(?:between|both)\s+(?:(?:options?|letters?|choices?)\s+)?(?:(?:an?|the)\s+)?[\s(\[]*$", re.IGNORECASE
)
# A letter given with an option's name beside it: "B) sea lion", "B. tench" / "sea lion (B)", "tench - B".
_NAME_AFTER_LETTER = re.compile(r"\s*[).:\-–—]?\s*[(\[]?\s*(?:(?:an?|the)\s+)?", re.IGNORECASE)
_CLAUSE_END = re.compile(r"\s*(?:[)\].,;:!?\n*]|$)")
_LETTER_AFTER_NAME = re.compile(r"\s*(?:[(\[]|[-–—:]\s*[(\[]?)\s*")
# Words with which a response takes back what it said first.
_CORRECTION = re.compile(
    r"(?<!\w)(?:wait|actually|on\s+second\s+thought|correction|let\s+me\s+reconsider|i\s+mean)(?!\w)", re.IGNORECASE
)
# A response that opens with its answer: "B.", "(B)", "**B** -", "C: sea lion", "B\n\nThe image ...".
_LEAD_LETTER = re.compile(
    r"[\s>#\-•]*(?:\((?P<paren>[A-Za-z])\)|\[(?P<bracket>[A-Za-z])\]"
    r"|(?P<bare>[A-Z])(?P<delimiter>\s*$|\s*\n|[.):](?!\w)|\s+[-–—(]|[-–—]))"
)
# Where a label of an enumeration ("A: no. B: yes.") begins: a line or a sentence.
_ITEM_START = re.compile(r"(?:^|\n|[.;!?]\s+)[\s>#\-•*]*$")
_LEAD_ARTICLE = re.compile(
    r"[\s>#\-•]*(?:(?:it(?:['’]s|\s+is)|this\s+is|that(?:['’]s|\s+is)"
    r"|(?:the|this)\s+(?:image|picture|photo)\s+(?:shows|depicts|contains))\s+)?(?:(?:an?|the)\s+)?",
    re.IGNORECASE,
)
# What a response writes beside each option it goes through: "- correct", "✓" / "- incorrect", "✗".
_VERDICT_YES = re.compile(r"(?<!\w)(?:correct|yes|right|the\s+answer)(?!\w)|[✓✔✅]", re.IGNORECASE)
_VERDICT_NO = re.compile(r"(?<!\w)(?:incorrect|no|not|wrong)(?!\w)|[✗✘❌]", re.IGNORECASE)
# Where a sentence ends, and the words with which a response's last sentence concludes ("so it's a sea lion").
_SENTENCE_END = re.compile(r"[.!?;]+(?:\s+|$)|\n+")
_CONCLUSION = re.compile(
    r"(?<!\w)(?:so|therefore|thus|hence|conclusion|overall|given|it['’]s|it\s+is|this\s+is|that['’]s"
    r"|must\s+be|likely|best|answer|i\s+(?:think|believe|choose|pick|select|would))(?!\w)",
    re.IGNORECASE,
)
_LEAD_NAME_END = re.compile(r"\s*(?:\(\s*[A-Za-z]\s*\))?\s*(?:[.!:\n]|$)")
# Where an answer may end; ending elsewhere (a letter, a comma) after long reasoning means it was cut off.
_DANGLING = re.compile(r"(?<!\w)(?:or|vs\.?|versus|either|between)\s*$", re.IGNORECASE)
_TERMINAL = frozenset(".!?)]}\"'”’»」』。！？…*`")


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


# Plurals the answer may use for an option's last word ("goldfishes", "butterflies", "wolves", "oxen").
_IRREGULAR_PLURALS = {
    "ox": "oxen",
    "mouse": "mice",
    "goose": "geese",
    "foot": "feet",
    "tooth": "teeth",
    "louse": "lice",
    "person": "people",
    "child": "children",
}


def _word_forms(word: str) -> set[str]:
    """``word`` and the plural (or, for a plural, the singular) forms an answer may write instead."""
    lower = word.lower()
    forms = {lower, lower + "s", lower + "es"}
    if lower in _IRREGULAR_PLURALS:
        forms.add(_IRREGULAR_PLURALS[lower])
    if len(lower) > 2 and lower.endswith("y") and lower[-2] not in "aeiou":
        forms.add(lower[:-1] + "ies")
    if lower.endswith("f"):
        forms.add(lower[:-1] + "ves")
    if lower.endswith("fe"):
        forms.add(lower[:-2] + "ves")
    if lower.endswith("man"):
        forms.add(lower[:-3] + "men")
    if len(lower) > 3 and lower.endswith("s") and not lower.endswith(("ss", "us", "is")):
        forms.add(lower[:-1])
    return forms


def _name_phrases(name: str) -> list[str]:
    """The phrases that name an option: its whole name, and each comma-separated synonym of an ImageNet-style
    name ("gas mask, respirator, gas helmet" is also named by "gas mask" alone)."""
    name = unicodedata.normalize("NFKC", name).strip()
    phrases = [name] if name else []
    if "," in name:
        phrases += [part.strip() for part in name.split(",") if part.strip()]
    return phrases


@functools.lru_cache(maxsize=4096)
def _name_pattern(name: str) -> re.Pattern[str]:
    """A phrase naming the option ``name``, its synonyms or their plurals, as whole words, case-insensitive;
    words may be joined by spaces or a hyphen ("golden-retriever")."""
    alternatives: set[str] = set()
    for phrase in _name_phrases(name):
        *head, last = phrase.split()
        joined = r"[\s\-]+".join(re.escape(word) for word in head)
        for form in _word_forms(last):
            alternatives.add(rf"{joined}[\s\-]+{re.escape(form)}" if head else re.escape(form))
    body = "|".join(sorted(alternatives, key=len, reverse=True))
    # Whole words by \w, not _W: a class of Unicode ranges makes every one of a thousand class names slow to
    # compile, and option names are not written beside CJK text.
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


def _option_mentions(response: str, option_names: Sequence[str]) -> list[tuple[int, int, int]]:
    """Every ``(start, end, option)`` where the response names an option, longest names winning, in order.

    A mention lying inside a longer option's mention is dropped: "sea lion" names only the sea lion,
    not also the lion.
    """
    mentions = [
        (m.start(), m.end(), option)
        for option, name in enumerate(option_names)
        if name.strip()
        for m in _name_pattern(name).finditer(response)
    ]
    return sorted(
        (start, end, option)
        for start, end, option in mentions
        if not any(
            other_start <= start and end <= other_end and (other_end - other_start) > (end - start)
            for other_start, other_end, _ in mentions
        )
    )


def _echoed_items(response: str, option_names: Sequence[str], letters: frozenset[str]) -> list[tuple[int, int]]:
    """Spans of an option list the response repeats, or ``[]`` if it repeats none.

    An item is a label ("C)", "(C)", "C.", "C:") followed by the name of an option, or a label that
    opens a line followed by any text. Items with two or more distinct letters are a list (the
    prompt's options echoed back, in whole or in part): its letters and names choose nothing.
    """
    patterns = [_name_pattern(name) for name in option_names if name.strip()]
    items: list[tuple[int, int, str]] = []
    for match in _ITEM_LABEL.finditer(response):
        letter = (match.group("paren") or match.group("bare")).upper()
        if letter not in letters:
            continue
        line_start = response.rfind("\n", 0, match.start()) + 1
        line_end = response.find("\n", match.end())
        line_end = len(response) if line_end < 0 else line_end
        named = [m.end() for p in patterns if (m := p.match(response, match.end())) is not None]
        rest = response[match.end() :].strip().lower()
        if not named and rest and any(name.lower().startswith(rest) for name in option_names):
            named = [len(response)]  # the list cut off inside this item's name
        if named:
            items.append((match.start(), max(named), letter))
        elif _LINE_LEAD.fullmatch(response, line_start, match.start()) and response[match.end() : line_end].strip():
            items.append((match.start(), line_end, letter))
    if len({letter for _, _, letter in items}) < 2:
        return []
    return [(start, end) for start, end, _ in items]


@frozen
class _Ref:
    """A place where the response refers to option ``option``: by letter or ordinal (``label``), by an
    answer marker (``marker``), or by its name."""

    start: int
    end: int
    option: int
    kind: Literal["marker", "label", "name"]


def _inside(position: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _label_refs(response: str, upper_letters: Sequence[str], text_spans: Sequence[tuple[int, int]]) -> list[_Ref]:
    """Letters used as labels, answer markers and ordinals, outside ``text_spans`` (option text)."""
    refs: dict[int, _Ref] = {}
    kinds: tuple[tuple[Literal["label", "marker"], re.Pattern[str]], ...] = (
        ("label", _LONE_CAPITAL),
        ("label", _NAMED_LOWERCASE),
        ("marker", _MARKER),  # last: where a marker's letter is also a lone capital, it is a marker
    )
    for kind, pattern in kinds:
        for match in pattern.finditer(response):
            letter, position = match.group("letter").upper(), match.start("letter")
            if letter in upper_letters and not _inside(position, text_spans) and _is_letter_use(response, match):
                refs[position] = _Ref(position, position + 1, upper_letters.index(letter), kind)
    for match in _ORDINAL.finditer(response):
        word = match.group("word")
        number = int(match.group("number")) if match.group("number") else _ORDINAL_WORDS.get(word.lower(), 0)
        option = len(upper_letters) - 1 if word and word.lower() == "last" else number - 1
        if 0 <= option < len(upper_letters) and not _inside(match.start(), text_spans):
            refs[match.start()] = _Ref(match.start(), match.end(), option, "label")
    return sorted(refs.values(), key=lambda ref: ref.start)


def _letter_runs(response: str) -> list[tuple[int, int]]:
    """Spans of three or more distinct capitals in a row ("A B C D", "A, B, C", "J I H"): degenerate output,
    not a choice. Every lone capital counts here, the article "A" and the pronoun "I" too."""
    runs: list[tuple[int, int]] = []
    chain: list[re.Match[str]] = []
    for match in [*_LONE_CAPITAL.finditer(response), None]:
        if match is not None and chain and _RUN_GAP.fullmatch(response, chain[-1].end(), match.start()):
            chain.append(match)
            continue
        if len({m.group("letter") for m in chain}) >= 3:
            runs.append((chain[0].start(), chain[-1].end()))
        chain = [] if match is None else [match]
    return runs


def _negated(ref: _Ref, masked: str) -> bool:
    """Whether the response rules this option out ("not B", "it isn't a tench or a goldfish", "B is wrong").

    ``masked`` is the response with every reference replaced by ``§``, so that a negation reaches over a list
    of options ("neither A nor B").
    """
    return (
        _NEGATED_BEFORE.search(masked, max(0, ref.start - 200), ref.start) is not None
        or _NEGATED_AFTER.match(masked, ref.end) is not None
    )


def _groups(refs: Sequence[_Ref], response: str) -> list[tuple[int, int, int]]:
    """References merged into ``(start, end, option)`` groups: a letter beside its option's name ("a tench (A)",
    "C) sea lion") is one reference."""
    groups: list[tuple[int, int, int]] = []
    for ref in refs:
        if groups and groups[-1][2] == ref.option and _APPOSITION.fullmatch(response, groups[-1][1], ref.start):
            groups[-1] = (groups[-1][0], max(groups[-1][1], ref.end), ref.option)
        elif not groups or ref.start >= groups[-1][1]:
            groups.append((ref.start, ref.end, ref.option))
    return groups


def _hedged(ref: _Ref, groups: Sequence[tuple[int, int, int]], response: str) -> bool:
    """Whether ``ref`` is one side of a hedge between options: "B or C", "B/C", "between D and E"."""
    index = next(i for i, (start, end, _) in enumerate(groups) if start <= ref.start < end)
    for first, second in ((index - 1, index), (index, index + 1)):
        if first < 0 or second >= len(groups) or groups[first][2] == groups[second][2]:
            continue
        gap = response[groups[first][1] : groups[second][0]]
        if _HEDGE_GAP.fullmatch(gap):
            return True
        if _AND_GAP.fullmatch(gap) and _BETWEEN.search(response, max(0, groups[first][0] - 40), groups[first][0]):
            return True
        letters = all(_LETTER_ONLY.fullmatch(response, *groups[i][:2]) for i in (first, second))
        if letters and _LIST_GAP.fullmatch(gap) and _CLAUSE_END.match(response, groups[second][1]):
            return True
    return False


def _contradicted(ref: _Ref, refs: Sequence[_Ref], response: str) -> bool:
    """Whether a letter is given with another option's name beside it ("B) sea lion" or "sea lion (B)" where
    B is the lion), or a name with another option's letter."""
    for other in refs:
        if other.option == ref.option or (other.kind == "name") == (ref.kind == "name"):
            continue
        letter, name = (ref, other) if ref.kind != "name" else (other, ref)
        after = _NAME_AFTER_LETTER.fullmatch(response, letter.end, name.start) and _CLAUSE_END.match(response, name.end)
        if after or _LETTER_AFTER_NAME.fullmatch(response, name.end, letter.start):
            return True
    return False


def _lead(response: str, refs: Sequence[_Ref], mentions: Sequence[tuple[int, int, int]]) -> _Ref | None:
    """The answer a response commits to before explaining it ("B. The mane ...", "Sea lion. Unlike C ..."),
    unless it goes on to correct itself or to go through the options one by one."""
    if _CORRECTION.search(response):
        return None
    letter = _LEAD_LETTER.match(response)
    if letter is not None:
        group = next(name for name in ("paren", "bracket", "bare") if letter.group(name) is not None)
        position = letter.start(group)
        ref = next((r for r in refs if r.start == position and r.kind != "name"), None)
        if ref is None:
            return None
        delimiter = (letter.group("delimiter") or "").strip()[:1]
        enumerated = bool(delimiter) and any(
            r.kind != "name"
            and r.option != ref.option
            and response.startswith(delimiter, r.end)
            and _ITEM_START.search(response, 0, r.start) is not None
            for r in refs
            if r.start > position
        )
        return None if enumerated else ref
    start = _LEAD_ARTICLE.match(response)
    assert start is not None  # the pattern matches the empty string
    opening = [(end, option) for mention_start, end, option in mentions if mention_start == start.end()]
    if len({option for _, option in opening}) != 1 or _LEAD_NAME_END.match(response, opening[0][0]) is None:
        return None  # no name first, or one shared by two options
    return _Ref(start.end(), opening[0][0], opening[0][1], "name")


def _conclusion(response: str, refs: Sequence[_Ref]) -> _Ref | None:
    """The option the response's last sentence that refers to options concludes with ("Therefore, it is a
    goldfish."), if that sentence refers to exactly one option and reads as a conclusion."""
    if not refs:
        return None
    last = refs[-1]
    ends = [m.end() for m in _SENTENCE_END.finditer(response, 0, last.start)]
    start = max(ends, default=0)
    end_match = _SENTENCE_END.search(response, last.end)
    end = len(response) if end_match is None else end_match.start()
    cues = list(_CONCLUSION.finditer(response, start, end))
    if not cues:
        return None
    # What follows the last cue concludes ("stripes like a tiger, so it's a tiger cat"), else the whole sentence.
    concluded = [ref for ref in refs if cues[-1].end() <= ref.start < end] or [
        ref for ref in refs if start <= ref.start < end
    ]
    return last if len({ref.option for ref in concluded}) == 1 else None


def _verdict(response: str, echoed: Sequence[tuple[int, int]], upper_letters: Sequence[str]) -> int | None:
    """The one option of a repeated option list that the response marks as the answer on its own line
    ("B) goldfish - correct" among "A) tench - incorrect", ...), if exactly one is so marked."""
    chosen = set()
    for start, end in echoed:
        label = _ITEM_LABEL.match(response, start)
        line_end = response.find("\n", end)
        verdict = response[end : len(response) if line_end < 0 else line_end]
        if label is None or not _VERDICT_YES.search(verdict) or _VERDICT_NO.search(verdict):
            continue
        letter = (label.group("paren") or label.group("bare")).upper()
        if letter in upper_letters:
            chosen.add(upper_letters.index(letter))
    return chosen.pop() if len(chosen) == 1 else None


def _cut_short(response: str, refs: Sequence[_Ref]) -> bool:
    """Whether the response reads as reasoning stopped by the token limit: long, weighing
    two or more options (ruled out or not), and ending mid-sentence rather than on an answer."""
    text = response.rstrip()
    if _DANGLING.search(text):
        return True
    if len(text) < 100 or text[-1] in _TERMINAL:
        return False
    if refs and refs[-1].end >= len(text) - 1:
        return False
    return len({ref.option for ref in refs}) >= 2


def _after_reasoning(text: str) -> str:
    """What follows the last closed reasoning block; an unclosed block's reasoning is dropped."""
    closes = list(_REASONING_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _REASONING_OPEN.search(text)
    return text if opened is None else text[: opened.start()]


def _object_answer(source: str) -> str | None:
    """The answer field of a flat JSON (or Python literal) object, if ``source`` is one with one."""
    try:
        value: object = json.loads(source)
    except ValueError:
        try:
            value = ast.literal_eval(source)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    if not isinstance(value, dict):
        return None
    for key_pattern in _ANSWER_KEYS:
        for key, field_value in value.items():
            if isinstance(key, str) and isinstance(field_value, str) and key_pattern.fullmatch(key):
                return field_value
    return None


def _structured_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` or JSON answer field in ``text``, if any."""
    found: list[tuple[int, str]] = [(m.start(), _LATEX_COMMAND.sub("", m.group("body"))) for m in _BOXED.finditer(text)]
    for m in _FLAT_OBJECT.finditer(text):
        answer = _object_answer(m.group())
        if answer is not None:
            found.append((m.start(), answer))
    return max(found)[1] if found else None


@frozen
class _Reading:
    """The option references of a response and what surrounds them, as :func:`_parse_plain` weighs them."""

    text: str
    upper_letters: Sequence[str]
    #: Where each option's text is named (start, end, option).
    mentions: list[tuple[int, int, int]]
    #: Spans where the response repeats the list of options.
    echoed: list[tuple[int, int]]
    #: Every reference, by position (a label before a name at the same place).
    refs: list[_Ref]
    #: The references that are not negated ("not B").
    standing: list[_Ref]
    groups: list[tuple[int, int, int]]
    #: Options offered as a second possibility ("or maybe C").
    alternatives: frozenset[int]

    def decide(self, ref: _Ref) -> str | None:
        """The letter of ``ref``, unless hedged, contradicted, or offered beside alternatives."""
        if _hedged(ref, self.groups, self.text) or _contradicted(ref, self.refs, self.text):
            return None
        # Options offered as a second possibility leave a response that has not committed (no marker) undecided.
        if self.alternatives and len({other.option for other in self.standing}) > 1:
            return None
        return self.upper_letters[ref.option]

    def outside_echo(self, refs: Sequence[_Ref]) -> list[_Ref]:
        return [ref for ref in refs if not _inside(ref.start, self.echoed)]


def _read(text: str, option_names: Sequence[str], upper_letters: Sequence[str]) -> _Reading:
    letters = frozenset(upper_letters)
    mentions = _option_mentions(text, option_names)
    option_text = [(start, end) for start, end, _ in mentions]
    echoed = _echoed_items(text, option_names, letters)
    runs = _letter_runs(text)
    labels = [ref for ref in _label_refs(text, upper_letters, option_text) if not _inside(ref.start, runs)]
    names = [_Ref(start, end, option, "name") for start, end, option in mentions if not _inside(start, echoed)]
    refs = sorted([*labels, *names], key=lambda ref: (ref.start, ref.kind == "name"))
    masked = list(text)
    for ref in refs:
        masked[ref.start : ref.end] = "§" * (ref.end - ref.start)
    masked_text = "".join(masked)
    standing = [ref for ref in refs if ref.kind == "marker" or not _negated(ref, masked_text)]
    alternatives = frozenset(
        ref.option
        for ref in standing
        if _ALSO_BEFORE.search(masked_text, max(0, ref.start - 60), ref.start)
        or _ALSO_AFTER.match(masked_text, ref.end)
    )
    groups = _groups(standing, text)
    return _Reading(text, upper_letters, mentions, echoed, refs, standing, groups, alternatives)


def _parse_plain(text: str, option_names: Sequence[str], upper_letters: Sequence[str]) -> str | None:
    """The element of ``upper_letters`` that ``text`` chooses by rules 2-8 of :func:`parse_answer`, or None."""
    bare = _BARE_LETTER.fullmatch(text)
    if bare is not None:
        letter = bare.group("letter").upper()
        return letter if letter in frozenset(upper_letters) else None
    reading = _read(text, option_names, upper_letters)
    standing = reading.standing
    markers = [ref for ref in standing if ref.kind == "marker"]
    if markers:
        return reading.decide(markers[-1])
    lead = _lead(text, reading.outside_echo(standing), reading.mentions)
    if lead is not None:
        return reading.decide(lead)
    verdict = _verdict(text, reading.echoed, upper_letters)
    if verdict is not None:
        return upper_letters[verdict]
    if _cut_short(text, reading.refs):
        return None
    concluded = _conclusion(text, reading.outside_echo(standing))
    if concluded is not None:
        return reading.decide(concluded)
    return _plain_choice(reading)


def _plain_choice(reading: _Reading) -> str | None:
    """Without a marker, lead, verdict or conclusion: the last plain label, else the one option named."""
    standing = reading.standing
    plain = [ref for ref in reading.outside_echo(standing) if ref.kind == "label"]
    if plain:
        chosen = reading.decide(plain[-1])
        # A hedge the response then settles by name: "Both C and D are sharks, but this one is a tiger shark."
        later = {ref.option for ref in standing if ref.kind == "name" and ref.start > plain[-1].end}
        if chosen is None and len(later) == 1 and _hedged(plain[-1], reading.groups, reading.text):
            return reading.decide(next(ref for ref in reversed(standing) if ref.kind == "name"))
        return chosen
    named = {ref.option for ref in standing if ref.kind == "name"}
    if len(named) != 1:
        return None
    return reading.decide(next(ref for ref in reversed(standing) if ref.kind == "name"))


def parse_answer(response: str, option_names: Sequence[str], letters: Sequence[str]) -> str | None:
    """The option letter a free-text response chooses, or ``None`` if it chooses none.

    ``option_names[i]`` is the text of option ``letters[i]``. The response is first normalised:
    Unicode compatibility forms are folded (full-width "Ｃ" and "：" become "C" and ":"), only what
    follows the last closed ``<think>...</think>`` block counts (an unclosed block counts for
    nothing), struck-through Markdown is dropped and emphasis marks are removed. Then evidence is
    weighed in this order, and the first kind present decides:

    1. a structured answer, the last one winning: ``\\boxed{C}`` or a JSON object's answer field
       (``{"answer": "C"}``); its content is parsed by rules 2-8 and, if it names no option, the
       response chooses none;
    2. a response that is only a letter, in either case ("c", " (B) ", "a.");
    3. an explicit marker ("Answer: C", "the answer is (C)", "答案：C", "正解はC", "Respuesta: C");
       the last wins;
    4. an answer the response opens with, before explaining it ("B. A tench (A) would be greener",
       "Sea lion. Not G: no mane"), unless it then corrects itself ("wait", "actually") or goes
       through the options one by one ("A: no. B: yes."); then the one option of a repeated option
       list marked as the answer on its line ("B) goldfish - correct", the others "incorrect");
    5. nothing, when the response reads as cut off by the token limit: 100 characters or more that
       refer to two or more options and end mid-sentence (or on a dangling "or"), not on an answer;
    6. the one option the last sentence referring to options concludes with ("Tench are green,
       goldfish orange. So it is a goldfish.": "so", "therefore", "it's", "the best match", ...);
    7. a letter standing alone or delimited ("C", "(C)", "C.", "[C]", "Option C", "选C") or an
       ordinal ("Option 3", "the third one", "the last option"); the last wins. An "A" or "I"
       followed by a word is the article or pronoun ("A dog sits", "I think"), capitals inside words
       do not count, and CJK characters beside a letter do not join it to a word;
    8. the name of exactly one option, as a whole phrase, case-insensitive: its whole name, one of its
       comma-separated synonyms ("gas mask" for "gas mask, respirator"), or their plurals
       ("goldfishes", "butterflies"); a name inside a longer named option ("lion" in "sea lion")
       counts only as the longer one. Two options named: None.

    Everywhere, the parser abstains rather than guess. An option ruled out ("not B", "it isn't a
    tench or a goldfish", "C is wrong", "more orange than a tench") does not count in 4-8. The
    choice of 3, 4, 6, 7 or 8 gives None when it is one side of a hedge ("B or C", "B/C", "between
    D and E", "either a tench (A) or a goldfish (B)"), when it is a letter given with another
    option's name ("B) tench" where A is the tench), or when another option is offered as a second
    possibility ("though C is also possible"); a hedge between letters that the response then
    settles by naming one option counts as that option. Three or more letters in a row ("A B C D
    ...") are degenerate output and count for nothing, as does a list of options in the prompt's
    ``X) name`` shape with two or more letters (an echo of the prompt, even one cut off mid-name).
    Letters outside ``letters`` and letters inside option text ("Model T") are ignored. Refusals
    ("I cannot determine", "I'm not sure") contain none of these and give ``None``. The letter
    returned is the matching element of ``letters``. Results
    change only with :data:`PARSER_VERSION`.

    Raises:
        ValueError: if ``option_names`` and ``letters`` differ in length.
    """
    if len(option_names) != len(letters):
        raise ValueError(f"{len(option_names)} option names for {len(letters)} letters")
    upper = [letter.upper() for letter in letters]
    text = _after_reasoning(unicodedata.normalize("NFKC", response))
    text = _EMPHASIS.sub("", _STRUCK.sub("", text))
    structured = _structured_answer(text)
    if structured is not None:
        text = structured
    chosen = _parse_plain(text, option_names, upper)
    return None if chosen is None else letters[upper.index(chosen)]
