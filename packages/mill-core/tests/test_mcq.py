"""Tests for mill.core.mcq: option derivation, prompt rendering, answer parsing and scoring."""

from __future__ import annotations

import pickle
import random

import pytest

from mill.core.kinds.generative_mcq import McqScore, score_response, unparsable_guess
from mill.core.mcq import (
    PARSER_VERSION,
    McqQuestion,
    derive_options,
    make_question_fn,
    option_letters,
    option_seed,
    parse_answer,
    render_prompt,
)

IMAGENET_TEMPLATE = (
    "Which of these categories best describes the image?\n{options}\nAnswer with the letter of the correct option."
)

# Ten options A-J, with one name containing another ("sea lion" / "lion") and one holding a
# capital letter that is not a label ("Model T").
OPTIONS = (
    "golden retriever",
    "lion",
    "sea lion",
    "tabby cat",
    "cobra",
    "Model T",
    "king penguin",
    "goldfish",
    "ox",
    "jay",
)
LETTERS = option_letters(10)


def reference_options(seed: int, variant: str, key: str, cls: int, n_options: int, n_classes: int) -> list[int]:
    """The published protocol, written out independently of the module under test."""
    rng = random.Random(f"{seed}|{variant}|{key}")
    distractors = rng.sample([i for i in range(n_classes) if i != cls], n_options - 1)
    options = distractors + [cls]  # noqa: RUF005  (kept as the protocol writes it)
    rng.shuffle(options)
    return options


# --- Option derivation ----------------------------------------------------------------------------


def test_option_seed_string() -> None:
    assert option_seed(42, "imagenet_mcq", "s0000000") == "42|imagenet_mcq|s0000000"


@pytest.mark.parametrize("seed", [0, 42, 1234])
@pytest.mark.parametrize("key", ["s0000000", "s0000001", "s0049999", "n01440764_10026"])
@pytest.mark.parametrize("gold", [0, 7, 999])
def test_derive_options_matches_reference(seed: int, key: str, gold: int) -> None:
    expected = reference_options(seed, "imagenet_mcq", key, gold, 10, 1000)
    assert list(derive_options(seed, "imagenet_mcq", key, gold, 10, 1000)) == expected


def test_derive_options_contains_gold_once_and_distinct() -> None:
    for i in range(200):
        options = derive_options(42, "imagenet_mcq", f"s{i:07d}", i % 1000, 10, 1000)
        assert len(options) == 10
        assert len(set(options)) == 10
        assert options.count(i % 1000) == 1


def test_options_change_with_seed_variant_and_key() -> None:
    base = derive_options(42, "imagenet_mcq", "s0000000", 5, 10, 1000)
    assert derive_options(43, "imagenet_mcq", "s0000000", 5, 10, 1000) != base
    assert derive_options(42, "other_mcq", "s0000000", 5, 10, 1000) != base
    assert derive_options(42, "imagenet_mcq", "s0000001", 5, 10, 1000) != base


def test_options_do_not_depend_on_call_order() -> None:
    keys = [f"s{i:07d}" for i in range(50)]
    forward = {key: derive_options(7, "v", key, 3, 10, 100) for key in keys}
    random.seed(0)  # the global generator must not leak in
    backward = {key: derive_options(7, "v", key, 3, 10, 100) for key in reversed(keys)}
    assert forward == backward


def test_all_classes_as_options() -> None:
    options = derive_options(0, "v", "k", 2, 5, 5)
    assert sorted(options) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("n_options", "n_classes", "gold"),
    [(11, 10, 0), (0, 10, 0), (4, 10, 10), (4, 10, -1)],
)
def test_derive_options_rejects_bad_arguments(n_options: int, n_classes: int, gold: int) -> None:
    with pytest.raises(ValueError):
        derive_options(0, "v", "k", gold, n_options, n_classes)


# --- Prompt rendering -----------------------------------------------------------------------------


def test_render_prompt_exact_text() -> None:
    prompt = render_prompt(IMAGENET_TEMPLATE, ["tench", "goldfish", "great white shark"])
    assert prompt == (
        "Which of these categories best describes the image?\n"
        "A) tench\n"
        "B) goldfish\n"
        "C) great white shark\n"
        "Answer with the letter of the correct option."
    )


def test_render_prompt_ten_options_and_literal_braces() -> None:
    names = [f"class {i}" for i in range(10)]
    prompt = render_prompt("{x} pick one:\n{options}", names)
    lines = prompt.split("\n")
    assert lines[0] == "{x} pick one:"
    assert lines[1] == "A) class 0"
    assert lines[10] == "J) class 9"


def test_render_prompt_requires_placeholder() -> None:
    with pytest.raises(ValueError, match="options"):
        render_prompt("Which is it?", ["a", "b"])


# --- Question factory -----------------------------------------------------------------------------


def test_question_fn_builds_consistent_question() -> None:
    classnames = [f"class {i}" for i in range(1000)]
    question_fn = make_question_fn(42, "imagenet_mcq", classnames, 10, IMAGENET_TEMPLATE)
    question = question_fn("s0000000", 123)

    assert isinstance(question, McqQuestion)
    expected = reference_options(42, "imagenet_mcq", "s0000000", 123, 10, 1000)
    assert list(question.option_indices) == expected
    assert question.letters == tuple("ABCDEFGHIJ")
    assert question.option_indices[question.letters.index(question.gold_letter)] == 123
    assert question.prompt == render_prompt(IMAGENET_TEMPLATE, [classnames[i] for i in expected])
    assert question_fn("s0000000", 123) == question


def test_question_fn_is_picklable() -> None:
    question_fn = make_question_fn(1, "v", ["a", "b", "c", "d"], 4, "{options}")
    restored = pickle.loads(pickle.dumps(question_fn))
    assert restored("k", 2) == question_fn("k", 2)


@pytest.mark.parametrize(
    ("classnames", "n_options", "template"),
    [(["a", "b"], 3, "{options}"), (["a", "b", "c"], 0, "{options}"), (["a", "b", "c"], 2, "no placeholder")],
)
def test_question_fn_validates(classnames: list[str], n_options: int, template: str) -> None:
    with pytest.raises(ValueError):
        make_question_fn(0, "v", classnames, n_options, template)


# --- Answer parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # Bare and delimited letters.
        ("C", "C"),
        ("C.", "C"),
        ("(C)", "C"),
        ("C)", "C"),
        ("C:", "C"),
        ("**C**", "C"),
        ("[C]", "C"),
        ("Option C", "C"),
        ("option d", "D"),
        ("  B\n", "B"),
        ("J", "J"),
        ("C) sea lion", "C"),
        # Explicit markers, including lowercase letters after them.
        ("Answer: C", "C"),
        ("answer: c", "C"),
        ("The answer is (C).", "C"),
        ("the answer is C", "C"),
        ("Final answer: **C**", "C"),
        ("**Answer:** D", "D"),
        ("Correct option: E", "E"),
        ("The correct answer is option b.", "B"),
        ("Answer: A because it has a mane", "A"),
        ("Answer: I", "I"),
        # Reasoning that mentions several letters: the marker, else the last letter, wins.
        ("It's not A, but C", "C"),
        ("A is wrong; the answer is D", "D"),
        ("Answer: B. Wait, no. Final answer: G", "G"),
        ("The answer is C, not A.", "C"),
        ("Between B and F, I would pick F.", "F"),
        ("I think it is B", "B"),
        ("I believe the image shows option H.", "H"),
        # Article "A" and pronoun "I" are not letters.
        ("A dog sits on the grass", None),
        ("A close-up of a lion", "B"),
        ("A close-up of a sea lion", "C"),
        ("I'm looking at a cobra. E", "E"),
        # Capitals inside words, abbreviations and out-of-range letters are not answers.
        ("CAT", None),
        ("It looks like a U.S. flag", None),
        ("K", None),
        ("Answer: K", None),
        ("The answer is Z.", None),
        # Letters inside option text belong to the text.
        ("It's a Model T.", "F"),
        # Option text only.
        ("This is a golden retriever.", "A"),
        ("GOLDFISH", "H"),
        ("The answer is a golden retriever", "A"),
        ("Golden Retriever", "A"),
        ("a jay perched on a branch", "J"),
        # Containment: the longer name wins; two distinct options named is ambiguous.
        ("lion", "B"),
        ("sea lion", "C"),
        ("It is a sea lion on a rock.", "C"),
        ("Either a lion or a cobra.", None),
        ("It could be a lion, or maybe a sea lion.", None),
        # Words that merely contain an option name do not name it; its plural does (issue 25).
        ("an oxygen tank", None),
        ("goldfishes everywhere", "H"),
        # Refusals.
        ("I cannot determine the category from this image.", None),
        ("I'm not sure.", None),
        ("Sorry, I can't tell.", None),
        ("", None),
    ],
)
def test_parse_answer(response: str, expected: str | None) -> None:
    assert parse_answer(response, OPTIONS, LETTERS) == expected


def test_parse_answer_respects_fewer_options() -> None:
    letters = option_letters(4)
    names = OPTIONS[:4]
    assert parse_answer("E", names, letters) is None
    assert parse_answer("D", names, letters) == "D"
    # A name of a class that is not among the options is not an answer.
    assert parse_answer("cobra", names, letters) is None


def test_parse_answer_abbreviation_with_full_alphabet() -> None:
    letters = option_letters(26)
    names = [f"class {i}" for i in range(26)]
    assert parse_answer("It looks like a U.S. flag", names, letters) is None
    assert parse_answer("It looks like a U.S. flag, so S", names, letters) == "S"


def test_parse_answer_duplicate_names_are_ambiguous() -> None:
    assert parse_answer("a crane", ["crane", "crane", "ox"], ("A", "B", "C")) is None


def test_parse_answer_length_mismatch() -> None:
    with pytest.raises(ValueError):
        parse_answer("A", ["a", "b"], ("A", "B", "C"))


# --- Scoring --------------------------------------------------------------------------------------

QUESTION = McqQuestion(prompt="?", option_indices=tuple(range(10)), letters=LETTERS, gold_letter="C")


def test_score_correct_and_wrong() -> None:
    assert score_response("Answer: C", QUESTION, OPTIONS, "wrong", 0) == McqScore("C", "C", True)
    assert score_response("B", QUESTION, OPTIONS, "random", 0) == McqScore("B", "B", False)
    assert score_response("a sea lion", QUESTION, OPTIONS, "wrong", 0) == McqScore("C", "C", True)


def test_score_unparsable_wrong_policy() -> None:
    assert score_response("I cannot tell", QUESTION, OPTIONS, "wrong", 0) == McqScore(None, None, False)


def test_score_unparsable_random_policy_is_seeded() -> None:
    response = "I cannot tell"
    score = score_response(response, QUESTION, OPTIONS, "random", 42)
    expected = random.Random(f"42|parse_multi_choice|{response}").choice(list(LETTERS))
    assert score.parsed_letter is None
    assert score.prediction == expected == unparsable_guess(response, LETTERS, 42)
    assert score.correct == (expected == "C")
    assert score_response(response, QUESTION, OPTIONS, "random", 42) == score


def test_random_policy_varies_with_seed_and_response() -> None:
    guesses = {score_response("??", QUESTION, OPTIONS, "random", seed).prediction for seed in range(50)}
    guesses |= {score_response(f"?{i}", QUESTION, OPTIONS, "random", 0).prediction for i in range(50)}
    assert len(guesses) > 1
    assert guesses <= set(LETTERS)


def test_score_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy"):
        score_response("A", QUESTION, OPTIONS, "skip", 0)  # type: ignore[arg-type]


# --- Responses real VLMs write ----------------------------------------------------------------------
# One corpus per class of response; each holds negative cases that must stay unparsed.


def _parses(
    corpus: list[tuple[str, str | None]], names: tuple[str, ...] = OPTIONS
) -> list[tuple[str, str | None, str | None]]:
    """``(response, expected, parsed)`` for every case of ``corpus`` that parses otherwise among ``names``."""
    return [
        (response, expected, parsed)
        for response, expected in corpus
        if (parsed := parse_answer(response, names, LETTERS)) != expected
    ]


ECHOED_LISTS: list[tuple[str, str | None]] = [
    ("A) golden retriever\nB) lion\nC) sea lion\nD) tabby cat", None),
    ("A) golden retriever B) lion C) sea lion", None),
    ("A) golden retriever, B) lion", None),
    ("(A) golden retriever (B) lion (C) sea lion", None),
    ("A. golden retriever\nB. lion\nC. sea lion", None),
    ("- A) golden retriever\n- B) lion\n- J) jay", None),
    ("A) dog\nB) cat", None),  # options echoed with names the prompt did not use
    ("H) goldfish\nI) ox\nJ) jay", None),  # a tail of the list
    ("The answer is between A) golden retriever and C) sea lion", None),
    ("**A) golden retriever**\n**B) lion**", None),
    ("Options: A) golden retriever, B) lion, C) sea lion. I choose C.", "C"),
    ("A) golden retriever\nB) lion\nC) sea lion\nAnswer: C", "C"),
    ("A) golden retriever\nB) lion\n\nThe image shows a king penguin, so G.", "G"),
    ("C) sea lion", "C"),
    ("C) sea lion\nC) sea lion", "C"),
    ("It's not A: too small. C: sea lion fits.", "C"),
    ("A) golden retriever - incorrect\nB) lion - incorrect\nC) sea lion - correct\nD) tabby cat - incorrect", "C"),
    ("A) golden retriever ✗\nB) lion ✗\nC) sea lion ✓", "C"),
    ("A) golden retriever - correct\nC) sea lion - correct", None),
]


def test_echoed_option_lists_choose_none() -> None:
    """Also the one option of an echoed list marked as the answer on its line."""
    assert _parses(ECHOED_LISTS) == []


@pytest.mark.parametrize("seed", range(20))
def test_echo_of_a_rendered_prompt_chooses_none(seed: int) -> None:
    classnames = [f"class {i}" for i in range(100)]
    question = make_question_fn(seed, "imagenet_mcq", classnames, 10, "{options}")(f"s{seed:07d}", seed)
    names = [classnames[i] for i in question.option_indices]
    lines = question.prompt.split("\n")
    start = seed % 5
    echo = "\n".join(lines[start : start + 2 + seed % 4])
    assert parse_answer(echo, names, question.letters) is None
    assert parse_answer(f"{echo}\nAnswer: {question.gold_letter}", names, question.letters) == question.gold_letter


BARE_LETTERS: list[tuple[str, str | None]] = [
    ("c", "C"),
    ("C", "C"),
    ("  b  ", "B"),
    ("\n\nd\n", "D"),
    ("\tE\t", "E"),
    ("(d)", "D"),
    ("a.", "A"),
    ("a", "A"),
    ("i", "I"),
    ("j)", "J"),
    (" [h] ", "H"),
    ("g\n", "G"),
    ("k", None),
    ("Z", None),
    ("cc", None),
    ("   ", None),
    ("c d", None),
]


def test_bare_letters_in_either_case() -> None:
    assert _parses(BARE_LETTERS) == []


CJK_AND_OTHER_LANGUAGES: list[tuple[str, str | None]] = [
    ("答案：C", "C"),
    ("答案是C", "C"),
    ("答案: c", "C"),
    ("正确答案是（C）", "C"),
    ("最终答案：**D**", "D"),
    ("我选择B。", "B"),
    ("图片中是海狮，所以选C。", "C"),
    ("选项D", "D"),
    ("C是正确的", "C"),
    ("答案不是A，是C", "C"),
    ("答案：Ｃ", "C"),  # full-width letter
    ("答えはCです", "C"),
    ("正解：B", "B"),
    ("정답은 C입니다", "C"),
    ("정답: D", "D"),
    ("Respuesta: C", "C"),
    ("La respuesta correcta es C", "C"),
    ("La bonne réponse est C.", "C"),
    ("Die richtige Antwort ist C", "C"),
    ("A resposta correta é E", "E"),
    ("Ответ: C", "C"),
    ("Đáp án: C", "C"),
    ("Jawaban: G", "G"),
    ("答案是海狮", None),
    ("我不确定。", None),
    ("这张图片无法判断。", None),
    ("选项：A) golden retriever B) lion", None),
    ("答案：K", None),
    ("Ответ: не знаю", None),
]


def test_answer_markers_in_other_languages_and_letters_beside_cjk() -> None:
    assert _parses(CJK_AND_OTHER_LANGUAGES) == []


REASONING_BLOCKS: list[tuple[str, str | None]] = [
    ("<think>The image shows a lion. Answer: B</think>\n\nC", "C"),
    ("<think>\n\n</think>\n\nD", "D"),
    ("<think>A or B? It has a mane.</think>The answer is (b).", "B"),
    ("</think>C", "C"),  # the template opened the block; only its end was generated
    ("<THINK>A</THINK> E", "E"),
    ("<thinking>Looks like a cat, so D.</thinking>\nAnswer: D", "D"),
    ("◁think▷hmm, A◁/think▷F", "F"),
    ("<think>first</think>\n<think>second, maybe A</think>\nG", "G"),
    ("<think>It is a sea lion</think>\nsea lion", "C"),
    ("<think>\nThe answer is C.\n</think>", None),  # nothing follows the reasoning
    ("<think>long reasoning... maybe A, or B", None),  # cut off mid-reasoning
    ("<think>Answer: C", None),
    ("<think>A</think>\n\nI cannot tell.", None),
    ("<think>The answer is B</think>\n<think>still thinking about C", None),
]


def test_what_follows_the_reasoning_decides() -> None:
    assert _parses(REASONING_BLOCKS) == []


STRUCTURED_ANSWERS: list[tuple[str, str | None]] = [
    ('{"answer": "C"}', "C"),
    ('{"answer": "c"}', "C"),
    ("{'answer': 'D'}", "D"),
    ('```json\n{"answer": "C", "reason": "A mane is visible"}\n```', "C"),
    ('{"choice": "e"}', "E"),
    ('{"Answer": "(B)"}', "B"),
    ('{"answer": "sea lion"}', "C"),
    ('{"reasoning": "It is not A", "final_answer": "G"}', "G"),
    ('{"answer": {"letter": "H"}}', "H"),
    ('{"answer_explanation": "A is wrong", "answer": "C"}', "C"),
    ('{"explanation": "not B", "answer_letter": "I"}', "I"),
    ('{"answer": "unknown"}', None),
    ('{"answer": ""}', None),
    ('{"confidence": 0.9}', None),
    ("\\boxed{C}", "C"),
    ("$\\boxed{c}$", "C"),
    ("\\boxed{\\text{C}}", "C"),
    ("\\boxed{\\textbf{(D)}}", "D"),
    ("A is close, but \\boxed{(D)}. Also A fits the colour.", "D"),
    ("\\boxed{C) sea lion}", "C"),
    ("First \\boxed{A}, on reflection \\boxed{B}", "B"),
    ("\\boxed{}", None),
    ("\\boxed{Z}", None),
    ("\\boxed{lion or cobra}", None),
]


def test_json_and_boxed_answers() -> None:
    assert _parses(STRUCTURED_ANSWERS) == []


MARKDOWN_EMPHASIS: list[tuple[str, str | None]] = [
    ("**Answer:** _c_", "C"),
    ("__C__", "C"),
    ("*C*", "C"),
    ("***C***", "C"),
    ("Answer: **c**", "C"),
    ("**答案：C**", "C"),
    ("The answer is ~~A~~ **C**", "C"),
    ("**Final Answer**: D", "D"),
    ("## Answer\n\nE", "E"),
    ("_Answer_: d", "D"),
    ("> **Answer:** `B`", "B"),
    ("**(F)**", "F"),
    ("The image shows a **sea lion**.", "C"),
    ("~~B~~", None),
    ("**I cannot tell.**", None),
    ("*A dog sits on the grass*", None),
    ("__init__ CAT", None),
]


def test_markdown_emphasis_around_markers_and_letters() -> None:
    assert _parses(MARKDOWN_EMPHASIS) == []


def test_parser_version_is_exported() -> None:
    assert PARSER_VERSION == 3


# --- The classes of issue 25, on ten ImageNet-style options ---------------------------------------------
# Names as ImageNet writes them: synonyms after commas, one name inside another ("lion" / "sea lion").

IMAGENET_OPTIONS = (
    "tench, Tinca tinca",
    "goldfish, Carassius auratus",
    "great white shark, white shark, man-eater",
    "tiger shark, Galeocerdo cuvieri",
    "gas mask, respirator, gas helmet",
    "sea lion",
    "lion, king of beasts, Panthera leo",
    "butterfly",
    "sunglasses, dark glasses, shades",
    "red wolf, maned wolf",
)


PLAIN_FORMATS: list[tuple[str, str | None]] = [
    ("B", "B"),
    ("(B)", "B"),
    ("B.", "B"),
    ("b", "B"),
    ("**B**", "B"),
    ("Answer: B", "B"),
    ("Answer: (B)", "B"),
    ("The answer is B.", "B"),
    ("The answer is B. goldfish", "B"),
    ("The answer is B) goldfish", "B"),
    ("B) goldfish", "B"),
    ("B. goldfish", "B"),
    ("B - goldfish", "B"),
    ("**B) goldfish**", "B"),
    ("Answer: B (goldfish)", "B"),
    ("goldfish", "B"),
    ("Goldfish.", "B"),
    ("A goldfish.", "B"),
    ("The image shows a goldfish.", "B"),
    ("This is a goldfish swimming in a bowl.", "B"),
    ("The correct option is E.", "E"),
    ("Final answer: J", "J"),
    ("I'd go with C.", "C"),
    ("The best match is option G.", "G"),
    ("It's a great white shark.", "C"),
    ("Based on the dark lenses, the answer is I.", "I"),
    ("The animal in the picture is a sea lion, so the answer is F.", "F"),
    ("F", "F"),
    ("Option D", "D"),
    ("My answer: H", "H"),
]


def test_plain_formats_keep_working() -> None:
    assert _parses(PLAIN_FORMATS, IMAGENET_OPTIONS) == []


HEDGES: list[tuple[str, str | None]] = [
    ("B or C", None),
    ("B/C", None),
    ("It's either B or C.", None),
    ("The answer is B or C.", None),
    ("I'm torn between D and E.", None),
    ("Between D and E, hard to say.", None),
    ("It could be either a tench (A) or a goldfish (B).", None),
    ("Either a tench or a goldfish.", None),
    ("Probably C, or maybe D.", None),
    ("C or D; the fin shape is ambiguous.", None),
    ("The answer is (C) or (D).", None),
    ("I think it's either option A or option B.", None),
    ("Both C and D are plausible here.", None),
    ("It's a great white shark or a tiger shark, I can't tell which.", None),
    ("C vs D - too blurry to decide.", None),
    ("Hmm, B? Or maybe A.", None),
    ("A,B", None),
    ("Answer: A and B", None),
    ("B, or A", None),
    ("The image most likely shows a great white shark (C), although it could also be a tiger shark (D).", None),
    ("My best guess is D, though C is also possible.", None),
    ("D (most likely), C possible.", None),
    ("The most likely answer is D, given the stripes. However, it could also be C if they are shadows.", None),
    ("Answer: A/B", None),
    # A hedge that is then resolved commits.
    ("Between B and F, I would pick F.", "F"),
    ("C or D? Looking at the stripes, D.", "D"),
    ("Either A or B at first glance, but the orange colour says B. Answer: B", "B"),
    ("Not C or D; it's E.", "E"),
    ("Both C and D are sharks, but this one is a tiger shark.", "D"),
    ("It's between C and D, but I'll go with D.", "D"),
]


def test_hedges_between_options_choose_none() -> None:
    assert _parses(HEDGES, IMAGENET_OPTIONS) == []


LEADING_ANSWERS: list[tuple[str, str | None]] = [
    ("B. The fish is orange and small; a tench (A) would be olive-green.", "B"),
    ("B\n\nThe fish is bright orange. Option A, the tench, is greener, and C is a shark.", "B"),
    ("(F) The animal has flippers and no mane, unlike G.", "F"),
    ("F) sea lion. A lion (G) would have a mane and live on land.", "F"),
    ("**E** - the person wears a gas mask; I (sunglasses) only covers the eyes.", "E"),
    ("C: great white shark. The tiger shark (D) has stripes this one lacks.", "C"),
    ("D - tiger shark. Its stripes rule out C.", "D"),
    ("G.\nThe mane is clearly visible. F would be a sea lion, which has no mane.", "G"),
    ("Sea lion. It is not a lion (G): there is no mane.", "F"),
    ("Goldfish. Option A is a tench, which is a different colour.", "B"),
    ("I\n\nExplanation: dark lenses on a face. E (gas mask) covers the whole face.", "I"),
    ("J. The red wolf fits; H (butterfly) is an insect.", "J"),
    ("H) butterfly - the wings are clear. Answer choices A-G are animals without wings.", "H"),
    ("A.\n\nReasoning: olive colour and barbels; B is orange and C is a shark.", "A"),
    ("[C] The conical snout and grey back; D has vertical bars.", "C"),
    # A response that corrects its first answer is read to its end.
    ("B. Wait, actually the colour is olive, so A.", "A"),
    ("A: no, too green. B: yes, orange.", "B"),
    ("A is wrong; the answer is D", "D"),
]


def test_a_committed_leading_answer_outweighs_its_explanation() -> None:
    assert _parses(LEADING_ANSWERS, IMAGENET_OPTIONS) == []


CONCLUDED_REASONING: list[tuple[str, str | None]] = [
    (
        "The image shows an orange fish in a glass bowl. Tench are olive-green freshwater fish, while goldfish are "
        "typically orange and kept in bowls. Therefore, the image most likely shows a goldfish.",
        "B",
    ),
    ("The image shows a goldfish. Tench are greener and sharks are much larger.", "B"),
    ("The image depicts a sea lion. Lions live on land.", "F"),
    (
        "Let's consider each option. A tench is a fish. A lion is a big cat. The animal in the image has flippers, "
        "so it is a sea lion.",
        "F",
    ),
    (
        "Great white sharks have a grey back; tiger sharks have stripes. The shark here has stripes. "
        "So it's a tiger shark.",
        "D",
    ),
    ("In conclusion, the object is a gas mask, not sunglasses.", "E"),
    ("Overall, the best match is the butterfly.", "H"),
    ("The animal could be a red wolf or a lion. Given the mane, it's a lion.", "G"),
    ("A lion and a sea lion are very different animals. This one lives in the sea, so it's a sea lion.", "F"),
    ("Sunglasses and gas masks both cover the face. This one covers only the eyes, so sunglasses.", "I"),
    ("Options B and C are fish. The animal has flippers, so it's a sea lion.", "F"),
    # Reasoning that concludes nothing chooses nothing.
    ("Great white sharks have a grey back; tiger sharks have stripes. The shark in the picture has no stripes.", None),
    ("Sunglasses and gas masks both cover the face.", None),
    ("Tench are olive-green and goldfish are orange. The fish here is hard to see.", None),
]


def test_reasoning_is_read_to_its_conclusion() -> None:
    assert _parses(CONCLUDED_REASONING, IMAGENET_OPTIONS) == []


CUT_SHORT: list[tuple[str, str | None]] = [
    (
        "Let me look at each option. The fish is orange, which suggests a goldfish, but the body shape "
        "could also match a tench, and the fins are",
        None,
    ),
    (
        "First, the animal is in water. Sea lions (F) live in water, lions (G) do not. However, the mane "
        "visible on the head suggests that it might be",
        None,
    ),
    (
        "The options are:\nA) tench\nB) goldfish\nC) great white shark\nD) tiger shark\nE) gas",
        None,
    ),
    ("Options: A) tench, B) goldfish, C) great white shark, D) tiger shark, E) gas mask, F) sea", None),
    (
        "To answer, consider the colours. A tench is olive. A goldfish is orange. The image shows an "
        "animal that is mostly grey, which points towards C or D, and",
        None,
    ),
    (
        "Step 1: identify the object. It covers the face. Step 2: compare with E (gas mask) and I "
        "(sunglasses). The object covers the mouth as well, so",
        None,
    ),
    ("<think>The image shows a grey shark. Is it C or D? The stripes", None),
    ("It might be a butterfly or", None),
    (
        "Looking closely at the picture, the stripes along the body resemble those of the tiger shark "
        "rather than the great white shark, which has a uniform grey back and a white belly, and the",
        None,
    ),
    # Cut short after a clear commitment: the commitment stands.
    (
        "The answer is D. The stripes along the flank are characteristic of a tiger shark, unlike the "
        "great white shark (C), whose back is",
        "D",
    ),
    (
        "D. The stripes along the flank are characteristic of a tiger shark, unlike the great white "
        "shark (C), whose back is",
        "D",
    ),
    (
        "The photograph shows a large grey shark swimming near the surface of the ocean with its mouth "
        "slightly open and a white belly: a great white shark",
        "C",
    ),
]


def test_output_cut_off_mid_reasoning_chooses_none() -> None:
    assert _parses(CUT_SHORT, IMAGENET_OPTIONS) == []


DEGENERATE: list[tuple[str, str | None]] = [
    ("A B C D E F G H I J", None),
    ("A, B, C, D, E, F, G, H, I, J", None),
    ("ABCDEFGHIJ", None),
    ("A\nB\nC\nD\nE\nF\nG\nH\nI\nJ", None),
    ("(A)(B)(C)(D)(E)", None),
    ("A. B. C. D. E. F. G.", None),
    ("Answer: A B C D E F G H I J", None),
    ("The answer is A B C D E F G H I J", None),
    ("A A A A A A B B B C C C D D D", None),
    ("ABCDABCDABCDABCD", None),
    ("J I H G F E D C B A", None),
    # Two letters are a hedge, one repeated is one answer.
    ("B B B", "B"),
]


def test_degenerate_output_chooses_none() -> None:
    assert _parses(DEGENERATE, IMAGENET_OPTIONS) == []


NAME_FORMS: list[tuple[str, str | None]] = [
    ("goldfishes", "B"),
    ("Two goldfishes in a bowl.", "B"),
    ("a pair of sunglasses", "I"),
    ("He is wearing dark glasses.", "I"),
    ("shades", "I"),
    ("gas mask", "E"),
    ("A man wearing a respirator.", "E"),
    ("Gas masks hanging on a wall.", "E"),
    ("a man-eater", "C"),
    ("The picture shows a white shark.", "C"),
    ("Tiger sharks.", "D"),
    ("Sea lions basking on a rock.", "F"),
    ("Lions resting in the grass.", "G"),
    ("A lion's mane.", "G"),
    ("Panthera leo", "G"),
    ("The king of beasts.", "G"),
    ("butterflies on a flower", "H"),
    ("Red wolves in the snow.", "J"),
    ("a maned wolf", "J"),
    ("Tinca tinca", "A"),
    ("Great-white shark", "C"),
    # A shorter name inside a longer one is not named by the longer one.
    ("sea lion", "F"),
    ("A sea lion, not a lion.", "F"),
    ("white", None),
    ("a shark", None),
    ("a wolf", None),
    ("fishing", None),
    ("glasses of water", None),
]


def test_other_grammatical_forms_and_first_synonyms_name_their_option() -> None:
    assert _parses(NAME_FORMS, IMAGENET_OPTIONS) == []


ORDINALS: list[tuple[str, str | None]] = [
    ("Option 3", "C"),
    ("option 10", "J"),
    ("The answer is option 4.", "D"),
    ("Answer: 2", "B"),
    ("the third one", "C"),
    ("The first option.", "A"),
    ("I choose the fifth option.", "E"),
    ("The second choice is correct.", "B"),
    ("It's the 6th one.", "F"),
    ("The last option.", "J"),
    ("#7", "G"),
    ("Option 11", None),
    ("At first glance it looks like a fish, but it's the seventh option.", "G"),
    ("Option 3 or option 4.", None),
    ("It has 2 fins and 3 stripes.", None),
]


def test_ordinals_name_their_option() -> None:
    assert _parses(ORDINALS, IMAGENET_OPTIONS) == []


NEGATIONS: list[tuple[str, str | None]] = [
    ("It isn't a tench or a goldfish; it's a great white shark.", "C"),
    ("Not a tench. A goldfish.", "B"),
    ("This is not a lion, it's a sea lion.", "F"),
    ("Neither A nor B: the answer is C.", "C"),
    ("Not A, not B, but C.", "C"),
    ("It's C (great white shark), not D.", "C"),
    ("The animal is not a tiger shark; it is a great white shark.", "C"),
    ("It is definitely not option E. It's I.", "I"),
    ("Rather than a red wolf, this is a lion.", "G"),
    ("I'd rule out A and B. The answer must be D.", "D"),
    ("C is wrong. D is correct.", "D"),
    ("A is incorrect, B is incorrect, the answer is C", "C"),
    ("It's not a butterfly.", None),
    ("Not A.", None),
    ("Not a goldfish or a tench.", None),
    ("I'm not sure, but I think it is B.", "B"),
    ("I can't tell whether it's a goldfish.", None),
    ("Not sure if this is a tench.", None),
    ("I don't think it's a lion; it's a sea lion.", "F"),
    # Options the answer is compared with, and first impressions taken back.
    ("The image shows a goldfish. A tench would be greener.", "B"),
    ("The fish is more orange than a tench, so it is a goldfish.", "B"),
    ("The image shows a goldfish; compared to a tench it is much brighter.", "B"),
    ("It looks similar to a tench, but it's a goldfish.", "B"),
    ("At first I thought it was a tench, but it's a goldfish.", "B"),
    ("The animal is larger than a sea lion, has a mane, and is a lion.", "G"),
]


def test_negated_options_are_ruled_out() -> None:
    assert _parses(NEGATIONS, IMAGENET_OPTIONS) == []


LETTER_AGAINST_TEXT: list[tuple[str, str | None]] = [
    ("The answer is B. tench", None),
    ("B) tench", None),
    ("Answer: C (tiger shark)", None),
    ("tench (B)", None),
    ("The answer is sea lion (G).", None),
    ("**E** sunglasses", None),
    ("F. lion", None),
    ("Answer: G - sea lion", None),
    ("J) butterfly", None),
    # A letter with its own option's text, and a letter followed by a sentence, are fine.
    ("G) lion", "G"),
    ("The answer is G (lion).", "G"),
    ("Answer: B. Tench fins are darker than these.", "B"),
]


def test_a_letter_given_with_another_options_text_chooses_none() -> None:
    assert _parses(LETTER_AGAINST_TEXT, IMAGENET_OPTIONS) == []


# A second set of ten ImageNet options: cats whose names share words, a duplicate-prone "crane", a tiger beside
# a tiger shark.
CAT_OPTIONS = (
    "tabby, tabby cat",
    "tiger cat",
    "Egyptian cat",
    "hen",
    "cock",
    "crane",
    "tiger, Panthera tigris",
    "Persian cat",
    "lynx, catamount",
    "tiger shark, Galeocerdo cuvieri",
)
CATS: list[tuple[str, str | None]] = [
    ("It is a cat.", None),
    ("tabby", "A"),
    ("The image shows a tabby cat.", "A"),
    ("This is a hen, not a cock.", "D"),
    ("A rooster.", None),
    ("The cat has stripes like a tiger, so it's a tiger cat.", "B"),
    ("The image shows a cat. It is likely a tabby cat, but could be a tiger cat.", None),
    ("A tiger.", "G"),
    ("Tigers in the jungle.", "G"),
    ("A tiger shark.", "J"),
    ("The answer is G: tiger", "G"),
    ("G) tiger, Panthera tigris", "G"),
    ("Panthera tigris", "G"),
    ("A lynx.", "I"),
    ("catamount", "I"),
    ("The image shows a Persian cat with long fur.", "H"),
    ("H) Persian cat", "H"),
    ("Persian cat (H)", "H"),
    ("Persian cat (A)", None),
    ("The best answer is (C) Egyptian cat.", "C"),
    ("I believe the answer is C) Egyptian cat, because of the slender body and large ears.", "C"),
    ("The cat in the image is an Egyptian cat (C). It's not a Persian (H) because its fur is short.", "C"),
    (
        "Looking at the image, I see a cat with striped fur. The options include tabby cat (A) and tiger cat "
        "(B). The stripes are more like those of a tabby, so the answer is A.",
        "A",
    ),
    (
        "Looking at the image, I see a cat with striped fur. The options include tabby cat (A) and tiger cat "
        "(B). The stripes are",
        None,
    ),
    ("E", "E"),
    ("The bird is a cock (E).", "E"),
    ("a crane", "F"),
    ("Hens.", "D"),
]


def test_options_whose_names_share_words() -> None:
    assert _parses(CATS, CAT_OPTIONS) == []


def test_issue_25_corpora_are_broad() -> None:
    corpora = [
        PLAIN_FORMATS,
        HEDGES,
        LEADING_ANSWERS,
        CONCLUDED_REASONING,
        CUT_SHORT,
        DEGENERATE,
        NAME_FORMS,
        ORDINALS,
        NEGATIONS,
        LETTER_AGAINST_TEXT,
        CATS,
    ]
    responses = [response for corpus in corpora for response, _ in corpus]
    assert len(responses) >= 150
    assert len(set(responses)) == len(responses)
