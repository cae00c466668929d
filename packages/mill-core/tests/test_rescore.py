"""Tests for mill.core.rescore: re-parsing stored MCQ responses with the current parser, one frame at a time and
for the runs stored in a results directory."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from attrs import evolve

from mill.core import rescore
from mill.core.atomic import write_json_atomic
from mill.core.convert import CONVERTER
from mill.core.errors import ResultsError
from mill.core.kinds import generative_mcq
from mill.core.kinds.generative_mcq import OUTPUT_SCHEMA as MCQ_SCHEMA
from mill.core.kinds.generative_mcq import (
    RESCORE_INPUT_COLUMNS,
    McqVariant,
    rescore_mcq,
    score_response,
    unparsable_guess,
)
from mill.core.kinds.zero_shot import ZeroShotVariant
from mill.core.mcq import PARSER_VERSION, make_question_fn
from mill.core.metrics import MetricValue
from mill.core.registry import SpecRegistry
from mill.core.rescore import rescore_outputs
from mill.core.results import (
    UPSERT_KEY,
    ResultsDir,
    RunFacts,
    read_aggregate,
    run_rows,
    upsert_aggregate,
)
from mill.core.spec import DatasetSpec, Spec

CLASSNAMES = [f"class {i}" for i in range(40)]
QUESTION_FN = make_question_fn(7, "toy_mcq", CLASSNAMES, 4, "Which?\n{options}\nAnswer with the letter.")


def stored_frame(responses: list[str | None], parsed: list[str | None]) -> pl.DataFrame:
    """A per-sample MCQ table as a run stores it, with ``parsed`` as an older parser gave it."""
    records: list[dict[str, Any]] = []
    for i, (response, parsed_letter) in enumerate(zip(responses, parsed, strict=True)):
        key, gold = f"s{i:07d}", (3 * i) % len(CLASSNAMES)
        question = QUESTION_FN(key, gold)
        records.append(
            {
                "key": key,
                "shard": "shard-000",
                "gold": gold,
                "gold_letter": question.gold_letter,
                "options": [CLASSNAMES[j] for j in question.option_indices],
                "option_indices": list(question.option_indices),
                "prompt": question.prompt,
                "response": response,
                "parsed_letter": parsed_letter,
                "prediction": parsed_letter,
                "correct": parsed_letter == question.gold_letter,
            }
        )
    return pl.DataFrame(records, schema=MCQ_SCHEMA)


# Responses whose stored parse (by the previous parser) differs from the current one, and some that do not.
STALE = [
    ("c", None),  # a bare lowercase letter
    ("A) x\nB) y\nC) z\nD) w", "D"),  # an echoed list
    ("<think>maybe A</think>\nB", "B"),
    ("<think>maybe A</think>\nD", "A"),  # a stale letter from inside the reasoning
    ('{"answer": "d"}', None),
    ("答案是C", None),
    ("Answer: B", "B"),
    ("I cannot tell.", None),
    (None, None),
]


def test_rescore_counts_changed_answers_and_rewrites_the_scored_columns() -> None:
    frame = stored_frame([r for r, _ in STALE], [p for _, p in STALE])
    result = rescore_mcq(frame, "wrong", 0)

    assert result.changed == 5
    assert result.frame["parsed_letter"].to_list() == ["C", None, "B", "D", "D", "C", "B", None, None]
    assert result.frame["prediction"].to_list() == result.frame["parsed_letter"].to_list()
    gold = result.frame["gold_letter"].to_list()
    assert result.frame["correct"].to_list() == [
        p == g for p, g in zip(result.frame["parsed_letter"], gold, strict=True)
    ]
    # Everything else is as stored: same columns in the same order, same rows in the same order.
    assert result.frame.schema == frame.schema
    untouched = [c for c in frame.columns if c not in ("parsed_letter", "prediction", "correct")]
    assert result.frame.select(untouched).equals(frame.select(untouched))


def test_rescore_agrees_with_scoring_at_evaluation_time() -> None:
    responses = [r or "" for r, _ in STALE]
    frame = stored_frame(responses, [None] * len(responses))
    for policy in ("wrong", "random"):
        result = rescore_mcq(frame, policy, 42)
        for row in result.frame.iter_rows(named=True):
            question = QUESTION_FN(row["key"], row["gold"])
            score = score_response(row["response"], question, row["options"], policy, 42)
            assert (row["parsed_letter"], row["prediction"], row["correct"]) == (
                score.parsed_letter,
                score.prediction,
                score.correct,
            )


def test_random_policy_guesses_only_for_unparsed_answers() -> None:
    frame = stored_frame(["I cannot tell.", "Answer: B"], [None, "B"])
    result = rescore_mcq(frame, "random", 3)
    assert result.changed == 0
    assert result.frame["parsed_letter"].to_list() == [None, "B"]
    assert result.frame["prediction"].to_list() == [unparsable_guess("I cannot tell.", "ABCD", 3), "B"]


def test_rescore_is_idempotent() -> None:
    first = rescore_mcq(stored_frame([r for r, _ in STALE], [p for _, p in STALE]), "random", 1)
    second = rescore_mcq(first.frame, "random", 1)
    assert second.changed == 0
    assert second.frame.equals(first.frame)


def test_rescore_of_an_empty_table() -> None:
    result = rescore_mcq(stored_frame([], []), "wrong", 0)
    assert result.changed == 0
    assert result.frame.height == 0
    assert result.frame.schema == stored_frame([], []).schema


@pytest.mark.parametrize("column", RESCORE_INPUT_COLUMNS)
def test_rescore_names_a_missing_column(column: str) -> None:
    frame = stored_frame(["A"], ["A"]).drop(column)
    with pytest.raises(ResultsError, match=column):
        rescore_mcq(frame, "wrong", 0)


def test_rescore_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy"):
        rescore_mcq(stored_frame(["A"], ["A"]), "skip", 0)  # type: ignore[arg-type]


# ---- rescore_outputs: stored runs in a results directory ----

MODEL = "toy/model"
SEED = 7
TOY_VARIANT = McqVariant(
    kind="generative_mcq",
    metric="toy_mcq_acc",
    n_options=4,
    prompt="Which?\n{options}\nAnswer with the letter.",
    max_new_tokens=8,
)
TOY_SPEC = Spec(
    name="toy",
    description="a toy benchmark",
    seed=SEED,
    headline_metric="acc",
    dataset=DatasetSpec(source="memory://toy", split="test", image_member="x", label_member="cls", n_samples=7),
    classnames=tuple(CLASSNAMES),
    templates=("a photo of a {c}.",),
    variants={"toy_mcq": TOY_VARIANT},
    reported=(),
    path=Path("toy.toml"),
    content_hash="0" * 64,
)
# (response, the letter an older parser read, the letter the current parser reads)
RUN_RESPONSES = [
    ("c", None, "C"),
    ("A) w\nB) x\nC) y\nD) z", "D", None),
    ('{"answer": "d"}', None, "D"),
    ("<think>maybe A</think>\nD", "D", "D"),
    ("Answer: B", "B", "B"),
    ("I cannot tell.", None, None),
    ("答案是C", "C", "C"),
]
N_CHANGED = sum(old != new for _, old, new in RUN_RESPONSES)


def older_parser(response: str, option_names: Sequence[str], letters: Sequence[str]) -> str | None:
    """Version 1's rule, near enough: the last standalone capital that is an option letter."""
    found = [c for c in re.findall(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", response) if c in letters]
    return found[-1] if found else None


def write_stored_run(out: Path, monkeypatch: pytest.MonkeyPatch, base: RunFacts, *, legacy: bool = False) -> Path:
    """A run of TOY_SPEC's MCQ variant stored as the engine stores it (other facts from ``base``), graded by
    :func:`older_parser` as parser version 1. ``legacy``: written before versions and variants were recorded (no
    ``scorer_version`` in the manifest or the aggregate file, no ``variant_config``). Returns the manifest's path."""
    task = generative_mcq.kind.build_task(TOY_SPEC, "toy_mcq", TOY_VARIANT, SEED)
    keys = [f"s{i:07d}" for i in range(len(RUN_RESPONSES))]
    golds = [(3 * i) % len(CLASSNAMES) for i in range(len(keys))]
    raw = pl.DataFrame(
        {
            "key": keys,
            "shard": ["test/0.tar"] * len(keys),
            "gold": golds,
            "prompt": [task.question(k, g).prompt for k, g in zip(keys, golds, strict=True)],
            "response": [r for r, _, _ in RUN_RESPONSES],
        }
    )
    with monkeypatch.context() as patch:
        patch.setattr(generative_mcq, "parse_answer", older_parser)
        scored = generative_mcq.kind.score(task, TOY_VARIANT, raw, SEED)
    assert scored.frame["parsed_letter"].to_list() == [old for _, old, _ in RUN_RESPONSES]
    files = ResultsDir(out).run_files(MODEL, "toy_mcq_0shot")
    parquet = files.per_sample
    ResultsDir(out).write_per_sample(files, scored.frame)
    version = None if legacy else 1
    manifest: dict[str, Any] = {
        "run_id": base.run_id,
        "model": MODEL,
        "benchmark": "toy",
        "variant": "toy_mcq",
        "seed": SEED,
        "metrics": {name: {"value": m.value, "stderr": m.stderr} for name, m in scored.metrics.items()},
    }
    if not legacy:
        manifest |= {"variant_config": CONVERTER.unstructure(TOY_VARIANT), "scorer_version": version}
    write_json_atomic(parquet.with_suffix(".json"), manifest)
    facts = evolve(
        base,
        model=MODEL,
        benchmark="toy",
        task_type="generative_mcq",
        n_samples=len(keys),
        seed=SEED,
        settings="max_new_tokens=8",
        output_file=str(parquet.relative_to(out)),
        scorer_version=version,
    )
    upsert_aggregate(out, run_rows(facts, "toy_mcq", scored.metrics, ("toy_mcq_acc", "acc")))
    # Another model's zero-shot run, whose rows a re-score must leave as they are.
    other = evolve(base, model="clip/model", benchmark="toy", output_file="outputs/z.parquet", run_id="z1")
    upsert_aggregate(out, run_rows(other, "toy", {"acc": MetricValue(0.25, 0.1)}, ("acc", "acc")))
    zero_shot_variant = CONVERTER.unstructure(ZeroShotVariant(kind="zero_shot", metric="acc"))
    write_json_atomic(out / "outputs" / "clip__model" / "toy_0shot.json", {"variant_config": zero_shot_variant})
    if legacy:
        # As written before versions (and checksums) were recorded.
        pl.read_csv(out / "aggregate.csv", infer_schema=False).drop("scorer_version").write_csv(out / "aggregate.csv")
        (out / "aggregate.csv.sha256").unlink()
    return parquet.with_suffix(".json")


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("legacy", [False, True], ids=["versioned", "legacy"])
def test_rescore_outputs_updates_a_run_parsed_by_an_older_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts: RunFacts, legacy: bool
) -> None:
    out = tmp_path / "out"
    manifest_path = write_stored_run(out, monkeypatch, facts, legacy=legacy)
    parquet = manifest_path.with_suffix(".parquet")
    stored = pl.read_parquet(parquet)
    before = read_aggregate(out)
    registry = SpecRegistry([TOY_SPEC])

    [run] = rescore_outputs(out, registry)

    assert (run.changed, run.from_version, run.to_version, run.status) == (N_CHANGED, 1, PARSER_VERSION, "rescored")
    assert (run.model, run.variant, run.n_samples) == (MODEL, "toy_mcq", len(RUN_RESPONSES))
    # The per-sample file holds the current parse; the previous one is kept beside it, unchanged.
    frame = pl.read_parquet(parquet)
    assert frame["parsed_letter"].to_list() == [new for _, _, new in RUN_RESPONSES]
    assert frame["correct"].to_list() == [
        p == g for p, g in zip(frame["parsed_letter"], frame["gold_letter"], strict=True)
    ]
    assert pl.read_parquet(parquet.with_name("toy_mcq_0shot.scorer1.parquet")).equals(stored)
    # Metrics as evaluation computes them, in the manifest and in the aggregate rows.
    expected = generative_mcq.metrics(frame, "toy_mcq_acc", SEED)
    assert expected["toy_mcq_acc"].value == pytest.approx(sum(frame["correct"]) / frame.height)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["metrics"] == {n: {"value": m.value, "stderr": m.stderr} for n, m in expected.items()}
    assert manifest["scorer_version"] == PARSER_VERSION
    assert manifest["variant_config"]["unparsed"] == "wrong"
    [note] = manifest["rescored"]
    assert note | {"at": None} == {
        "at": None,
        "from_scorer_version": 1,
        "to_scorer_version": PARSER_VERSION,
        "changed": N_CHANGED,
        "previous_file": "toy_mcq_0shot.scorer1.parquet",
    }
    after = read_aggregate(out)
    assert after.height == before.height  # updated in place: no row added
    assert after.select(UPSERT_KEY).is_duplicated().sum() == 0
    mine = after.filter(pl.col("run_id") == facts.run_id)
    value = {(r["task"], r["metric"]): (r["performance"], r["stderr"]) for r in mine.iter_rows(named=True)}
    assert value == {
        ("toy_mcq", "toy_mcq_acc"): (expected["toy_mcq_acc"].value, expected["toy_mcq_acc"].stderr),
        ("toy_mcq", "unparsed_rate"): (expected["unparsed_rate"].value, expected["unparsed_rate"].stderr),
        ("toy", "acc"): (expected["toy_mcq_acc"].value, expected["toy_mcq_acc"].stderr),  # the rollup row
    }
    assert set(mine["scorer_version"]) == {PARSER_VERSION}
    others = ["performance", "stderr", "scorer_version"]
    assert after.drop(others).equals(before.drop(others))
    assert after.filter(pl.col("run_id") == "z1").equals(before.filter(pl.col("run_id") == "z1"))

    # Running again finds the run current, writes nothing and keeps the first kept file.
    snapshot = _snapshot(out)
    [again] = rescore_outputs(out, registry)
    assert (again.changed, again.status) == (0, "current")
    assert _snapshot(out) == snapshot


def test_a_rescore_interrupted_after_the_per_sample_rewrite_counts_the_changes_when_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts: RunFacts
) -> None:
    out = tmp_path / "out"
    manifest_path = write_stored_run(out, monkeypatch, facts)
    registry = SpecRegistry([TOY_SPEC])

    def killed(*_: object, **__: object) -> None:
        raise KeyboardInterrupt  # after the per-sample file, before the aggregate rows and the manifest

    with monkeypatch.context() as patch:
        patch.setattr(rescore, "update_run_metrics", killed)
        with pytest.raises(KeyboardInterrupt):
            rescore_outputs(out, registry)
    assert json.loads(manifest_path.read_text())["scorer_version"] == 1

    [run] = rescore_outputs(out, registry)
    assert (run.changed, run.status) == (N_CHANGED, "rescored")  # it said 0: the rewritten file was graded again
    [note] = json.loads(manifest_path.read_text())["rescored"]
    assert note["changed"] == N_CHANGED


def test_dry_run_reports_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts: RunFacts) -> None:
    out = tmp_path / "out"
    write_stored_run(out, monkeypatch, facts)
    snapshot = _snapshot(out)
    [run] = rescore_outputs(out, SpecRegistry([TOY_SPEC]), dry_run=True)
    assert (run.changed, run.status) == (N_CHANGED, "would rescore")
    assert _snapshot(out) == snapshot


def test_rescore_outputs_selects_by_model_and_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts: RunFacts
) -> None:
    out = tmp_path / "out"
    write_stored_run(out, monkeypatch, facts)
    registry = SpecRegistry([TOY_SPEC])
    assert rescore_outputs(out, registry, models=["clip/model"], dry_run=True) == []
    assert rescore_outputs(out, registry, benchmarks=["imagenet"], dry_run=True) == []
    assert len(rescore_outputs(out, registry, models=[MODEL], benchmarks=["toy_mcq"], dry_run=True)) == 1
    assert len(rescore_outputs(out, registry, benchmarks=["toy"], dry_run=True)) == 1


def test_a_run_graded_by_newer_rules_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts: RunFacts
) -> None:
    out = tmp_path / "out"
    manifest_path = write_stored_run(out, monkeypatch, facts)
    manifest = json.loads(manifest_path.read_text())
    write_json_atomic(manifest_path, manifest | {"scorer_version": PARSER_VERSION + 1})
    snapshot = _snapshot(out)
    [run] = rescore_outputs(out, SpecRegistry([TOY_SPEC]))
    assert run.status == "newer"
    assert _snapshot(out) == snapshot


def test_a_legacy_manifest_needs_its_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts: RunFacts) -> None:
    out = tmp_path / "out"
    manifest_path = write_stored_run(out, monkeypatch, facts, legacy=True)
    with pytest.raises(ResultsError, match=r"toy_mcq_0shot\.json: .*benchmark 'toy' with variant 'toy_mcq'.*--spec"):
        rescore_outputs(out, SpecRegistry([]))
    renamed = evolve(TOY_SPEC, variants={"toy_mcq": evolve(TOY_VARIANT, metric="other_acc")})
    with pytest.raises(ResultsError, match=f"{manifest_path.name}: .*'other_acc', which the run did not report"):
        rescore_outputs(out, SpecRegistry([renamed]))


def test_unreadable_stored_files_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts: RunFacts) -> None:
    out = tmp_path / "out"
    manifest_path = write_stored_run(out, monkeypatch, facts)
    manifest_path.with_suffix(".parquet").write_bytes(b"not parquet")
    with pytest.raises(ResultsError, match=r"toy_mcq_0shot\.parquet: cannot read the per-sample file"):
        rescore_outputs(out, SpecRegistry([TOY_SPEC]))
    manifest_path.write_text("{", encoding="utf-8")
    with pytest.raises(ResultsError, match=r"toy_mcq_0shot\.json: cannot read the run manifest"):
        rescore_outputs(out, SpecRegistry([TOY_SPEC]))


def test_evaluation_and_rescore_share_the_metrics() -> None:
    """Re-grading a run scored by the current parser reproduces its frame and metrics exactly."""
    task = generative_mcq.kind.build_task(TOY_SPEC, "toy_mcq", TOY_VARIANT, SEED)
    raw = pl.DataFrame(
        {
            "key": ["s0", "s1", "s2"],
            "shard": ["t"] * 3,
            "gold": [0, 1, 2],
            "prompt": ["p"] * 3,
            "response": ["A", "c", "no idea"],
        }
    )
    scored = generative_mcq.kind.score(task, TOY_VARIANT, raw, SEED)
    rescorer = generative_mcq.kind.rescorer
    assert rescorer is not None and rescorer.version == PARSER_VERSION
    regraded = rescorer.rescore(TOY_VARIANT, scored.frame, SEED)
    assert regraded.changed == 0
    assert regraded.scored.frame.equals(scored.frame)
    assert regraded.scored.metrics == scored.metrics
