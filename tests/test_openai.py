"""``mill eval`` against a fake OpenAI-compatible endpoint on 127.0.0.1 (the ``fake_openai`` fixture): a scored
run, a run cut short that resumes without asking an answered question again, and no trace of the API key in
anything Mill wrote, logged or printed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mill.core.chunks import RUNS_DIR
from mill.core.engine import CHUNK_SIZE_ENV
from mill.testing.fake_openai import KEY, MODEL, FakeOpenAI

LIMIT = 12


def _model(fake: FakeOpenAI, **args: Any) -> str:
    extra = "".join(f",{key}={value}" for key, value in args.items())
    return f"openai[model={MODEL},base_url={fake.url}{extra}]"


def test_mill_eval_scores_a_served_model_and_collect_shows_its_usage(
    mill_eval: Any, mill_in_process: Any, fake_openai: FakeOpenAI
) -> None:
    run = mill_eval(
        _model(fake_openai, concurrency=4, price_input=2, price_output=8), "imagenet", "--limit", str(LIMIT)
    )
    assert run.outcome.code == 0, run.outcome.err
    frame = run.per_sample()
    assert len(frame) == LIMIT and set(frame["response"]) <= set("ABCD")
    assert frame["parsed_letter"].null_count() == 0  # every fake answer is a letter
    manifest = run.manifest()
    assert (manifest["backend"], manifest["model"], manifest["variant"]) == ("openai", MODEL, "imagenet_mcq")
    assert manifest["resolved_args"]["base_url"] == fake_openai.url
    assert manifest["model_revision"] == MODEL
    usage = manifest["run_info"]["usage"]
    assert usage["requests"] == LIMIT == len(fake_openai.answered)
    assert usage["output_tokens"] == LIMIT
    assert usage["cost_usd"] == pytest.approx((usage["input_tokens"] * 2 + LIMIT * 8) / 1e6)
    rows = run.aggregate()
    assert set(rows["model"]) == {MODEL}
    assert "imagenet_mcq_acc" in set(rows["metric"])
    collected = mill_in_process("collect", "--output_dir", str(run.output_dir), "--all", "--format", "json")
    assert collected.code == 0, collected.err
    (usage_table,) = [table for title, table in json.loads(collected.out).items() if title.startswith("usage")]
    assert usage_table == [
        {
            "model": MODEL,
            "task": "imagenet_mcq",
            "requests": LIMIT,
            "input_tokens": usage["input_tokens"],
            "output_tokens": LIMIT,
            "cost_usd": round(usage["cost_usd"], 4),
        }
    ]


def test_a_run_cut_short_resumes_without_asking_answered_questions_again(
    mill_in_process: Any,
    shards: Path,
    cache_dir: Path,
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CHUNK_SIZE_ENV, "4")
    model = _model(fake_openai, concurrency=1, batch_size=4, max_retries=0)
    argv = ("eval", model, "imagenet", "--limit", str(LIMIT), "--data_dir", str(shards), "--output_dir", str(tmp_path))
    argv += ("--cache_dir", str(cache_dir), "--quiet")
    fake_openai.fail_after = 6  # the first chunk (4) commits; 2 more answers are journalled, then 503s
    first = mill_in_process(*argv)
    assert first.code == 2
    assert first.err.startswith("error: openai backend: POST") and "status 503" in first.err
    assert len(first.err.strip().splitlines()) == 1
    (run_dir,) = (tmp_path / RUNS_DIR).iterdir()
    assert len((run_dir / "journal.jsonl").read_text().splitlines()) == 6

    fake_openai.fail_after = None
    resumed = mill_in_process(*argv)
    assert resumed.code == 0, resumed.err
    assert len(fake_openai.answered) == LIMIT
    assert set(fake_openai.answered.values()) == {1}  # no answered question was asked twice
    manifest = json.loads(next((tmp_path / "outputs").rglob("*.json")).read_text())
    assert manifest["n_reused"] == 4
    assert manifest["run_info"]["requests_from_journal"] == 2
    assert manifest["run_info"]["requests_sent"] == LIMIT - 6
    assert manifest["run_info"]["usage"]["requests"] == LIMIT


def test_the_api_key_is_in_nothing_mill_writes_logs_or_prints(
    mill_eval: Any, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture, cache_dir: Path
) -> None:
    caplog.set_level(logging.DEBUG)  # the openai client's and httpx's debug lines included
    fake_openai.faults = ["429", "500", "drop"]
    fake_openai.retry_after = "0"
    ok = mill_eval(_model(fake_openai, concurrency=2), "imagenet", "--limit", "4")
    assert ok.outcome.code == 0, ok.outcome.err
    fake_openai.faults = ["401"]
    refused = mill_eval(_model(fake_openai, concurrency=1), "imagenet", "--limit", "4")
    assert refused.outcome.code == 2 and "status 401" in refused.outcome.err
    printed = [ok.outcome.out, ok.outcome.err, refused.outcome.out, refused.outcome.err, caplog.text]
    assert caplog.text  # something was logged, so its absence of the key means something
    assert not [text for text in printed if KEY in text]
    written = [p for root in (ok.output_dir, refused.output_dir, cache_dir) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "journal.jsonl" for p in written)
    assert [p for p in written if KEY.encode() in p.read_bytes()] == []


def test_a_hosted_model_is_refused_letter_likelihood_before_anything_is_sent(mill_eval: Any) -> None:
    """Planned, not loaded: no key is needed to learn that a hosted API cannot score letters."""
    run = mill_eval("openai[model=gpt-4o,api_key_env=MILL_NO_SUCH_KEY]", "imagenet_mcq_likelihood")
    assert run.outcome.code == 2
    err = run.outcome.err
    assert "serves generative_mcq" in err and "imagenet_mcq_likelihood needs likelihood_mcq" in err
    assert "it can be evaluated on imagenet_mcq instead" in err
