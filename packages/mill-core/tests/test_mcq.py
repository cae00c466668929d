"""Tests for mill.core.mcq: option derivation, prompt rendering, answer parsing and scoring."""

from __future__ import annotations

import pickle
import random

import pytest

from mill.core.mcq import (
    McqQuestion,
    McqScore,
    derive_options,
    make_question_fn,
    option_letters,
    option_seed,
    parse_answer,
    render_prompt,
    score_response,
    unparsable_guess,
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
        # Words that merely contain an option name do not name it.
        ("an oxygen tank", None),
        ("goldfishes everywhere", None),
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
