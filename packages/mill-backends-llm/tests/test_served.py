"""The openai backend against a fake OpenAI-compatible endpoint on 127.0.0.1 (the ``fake_openai`` fixture of
``mill_testing``): the messages it sends, each fault's documented outcome, the journal, usage and cost."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attrs import frozen
from PIL import Image

from mill.backends.llm import endpoint
from mill.backends.llm.endpoint import EndpointError, retry_after_seconds
from mill.backends.llm.journal import Journal
from mill.backends.llm.messages import build_conversation
from mill.backends.llm.plugin import openai_plugin
from mill.core.backend import JournallingBackend, RunContext
from mill.core.errors import BackendArgumentError
from mill.core.kinds.generative_mcq import McqTask
from mill.core.kinds.likelihood_mcq import LikelihoodMcqTask
from mill.core.sample import SampleSource
from mill.testing.fake_openai import KEY, MODEL, FakeOpenAI

N_SAMPLES = 8


@frozen
class Served:
    """The fake endpoint, the backend's waits before retries (recorded instead of slept), and the questions."""

    fake: FakeOpenAI
    waits: list[float]
    task: McqTask
    data: SampleSource
    cache_dir: Path

    def load(self, **args: Any) -> Any:
        arguments = {"model": MODEL, "base_url": self.fake.url, **args}
        return openai_plugin.load(arguments, RunContext(cache_dir=self.cache_dir))

    def answered(self, backend: Any) -> int:
        """How many samples ``backend`` answered, asked the generative question about every sample."""
        return sum(len(result.keys) for result in backend.run_mcq(self.task, self.data))


@pytest.fixture
def served(
    fake_openai: FakeOpenAI,
    make_task: Callable[..., McqTask],
    dataset: SampleSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Served:
    waits: list[float] = []
    monkeypatch.setattr(endpoint, "wait", lambda seconds, _stop: waits.append(seconds))
    return Served(fake_openai, waits, make_task(), dataset, tmp_path)


def _decoded(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url.removeprefix(prefix))))


def test_each_sample_is_asked_the_hf_conversation_with_its_own_pixels(served: Served) -> None:
    backend = served.load(concurrency=3, batch_size=5)
    results = list(backend.run_mcq(served.task, served.data))
    assert [len(r.keys) for r in results] == [5, 3]
    batch = next(iter(served.data.batches(batch_size=N_SAMPLES)))
    images = dict(zip(batch.keys, batch.images, strict=True))
    sent = set()
    for body in served.fake.bodies:
        (message,) = body["messages"]
        image_part, text_part = message["content"]
        # The hf/vllm conversation, its placeholder carrying the image.
        assert [{**message, "content": [{"type": "image"}, text_part]}] == build_conversation(text_part["text"])
        assert image_part["type"] == "image_url"
        assert body["max_completion_tokens"] == served.task.max_new_tokens and body["temperature"] == 0.0
        sent.add((text_part["text"], _decoded(image_part["image_url"]["url"]).tobytes()))
    for result in results:
        for key, prompt, response in zip(result.keys, result.prompts, result.responses, strict=True):
            assert (prompt, images[key].tobytes()) in sent  # its own question about its own pixels, losslessly
            assert response in "ABCD" and len(response) == 1
    assert len(served.fake.answered) == N_SAMPLES  # distinct questions, each answered once
    assert isinstance(backend, JournallingBackend)


def test_429_waits_what_retry_after_asks_then_succeeds(served: Served) -> None:
    served.fake.faults = ["429"]
    served.fake.retry_after = "7"
    backend = served.load(concurrency=1)
    assert served.answered(backend) == N_SAMPLES
    assert served.waits == [7.0]
    assert backend.run_info()["retries"] == 1


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_server_errors_and_dropped_connections_are_retried_with_backoff(fault: str, served: Served) -> None:
    served.fake.faults = [fault, fault]
    backend = served.load(concurrency=1)
    assert served.answered(backend) == N_SAMPLES
    # Exponential: about 1 s, then about 2 s (plus up to a quarter of jitter).
    (first, second) = served.waits
    assert 1.0 <= first <= 1.25 and 2.0 <= second <= 2.5
    assert backend.run_info()["retries"] == 2


def test_a_request_that_times_out_is_sent_again(served: Served) -> None:
    served.fake.faults = ["timeout"]
    served.fake.hang_seconds = 1.0
    backend = served.load(concurrency=1, timeout=0.2)
    assert served.answered(backend) == N_SAMPLES
    assert len(served.waits) == 1 and backend.run_info()["retries"] == 1


def test_retries_run_out_with_one_error_naming_url_and_status(served: Served) -> None:
    served.fake.faults = ["500", "500", "500"]
    with pytest.raises(EndpointError) as raised:
        served.answered(served.load(concurrency=1, max_retries=2))
    message = str(raised.value)
    assert f"POST {served.fake.url}/chat/completions answered status 500 after 3 attempts" in message
    assert "the server is overloaded" in message and "\n" not in message
    assert len(served.waits) == 2


def test_an_answer_that_is_not_json_is_one_error(served: Served) -> None:
    served.fake.faults = ["malformed"]
    with pytest.raises(EndpointError, match="answered status 200 with a body that is not JSON") as raised:
        served.answered(served.load(concurrency=1))
    assert served.fake.url in str(raised.value)


def test_a_refused_key_is_one_error_that_never_repeats_it(served: Served) -> None:
    served.fake.faults = ["401"]
    with pytest.raises(EndpointError) as raised:
        served.answered(served.load(concurrency=1))
    message = str(raised.value)
    assert f"POST {served.fake.url}/chat/completions answered status 401" in message
    assert "$OPENAI_API_KEY" in message and KEY not in message
    assert served.waits == []  # a refused key is not retried


def test_a_wrong_key_is_refused_when_the_model_loads(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-wrong-key-123456")
    with pytest.raises(EndpointError, match=r"GET .*/models answered status 401.*\$MY_KEY") as raised:
        served.load(api_key_env="MY_KEY")
    assert "sk-wrong-key-123456" not in str(raised.value)
    assert served.fake.chat_requests == 0


def test_a_hosted_model_without_its_key_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(BackendArgumentError, match="NO_SUCH_KEY holding the API key is not set"):
        openai_plugin.load({"model": "gpt-4o", "api_key_env": "NO_SUCH_KEY"}, RunContext(cache_dir=tmp_path))


def test_a_model_the_endpoint_does_not_serve_is_refused(served: Served) -> None:
    with pytest.raises(BackendArgumentError, match=f"does not serve model='other'; it serves: {MODEL}"):
        served.load(model="other")


def test_identity_records_the_endpoint_and_what_it_reports(served: Served) -> None:
    served.fake.root = "/models/fake-weights"
    info = served.load(seed=3, temperature=0.5).info
    assert info.identity == MODEL
    assert info.revision == f"{MODEL}@/models/fake-weights"
    assert info.resolved_args["base_url"] == served.fake.url
    assert info.settings == {"temperature": "0.5", "seed": "3"}
    assert info.default_settings is False
    assert info.resolved_args["deterministic"] is False  # sampled at temperature 0.5
    assert KEY not in json.dumps(dict(info.resolved_args))


def test_hosted_models_serve_generative_mcq_only() -> None:
    assert openai_plugin.capabilities({"model": "gpt-4o"}).kinds == {"generative_mcq"}
    served = openai_plugin.capabilities({"model": "m", "base_url": "http://127.0.0.1:8000/v1"})
    assert served.kinds == {"generative_mcq", "likelihood_mcq"}


def test_an_interrupted_run_resumes_from_its_journal_without_asking_again(served: Served, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    served.fake.fail_after = 5
    first = served.load(concurrency=1, batch_size=8, max_retries=0)
    first.keep_journal(journal)
    with pytest.raises(EndpointError, match="status 503"):
        served.answered(first)  # one batch of 8: nothing of it was handed back
    assert sum(served.fake.answered.values()) == 5
    assert len(Journal(journal)) == 5

    served.fake.fail_after = None
    second = served.load(concurrency=2, batch_size=8)
    second.keep_journal(journal)
    assert served.answered(second) == N_SAMPLES
    assert len(served.fake.answered) == N_SAMPLES
    assert set(served.fake.answered.values()) == {1}  # no answered question was asked twice
    info = second.run_info()
    assert (info["requests_sent"], info["requests_from_journal"]) == (3, 5)
    assert info["usage"]["requests"] == N_SAMPLES


def test_a_journal_line_cut_short_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).add("a", {"x": 1})
    with open(path, "ab") as handle:
        handle.write(b'{"request": "b", "answ')
    journal = Journal(path)
    assert journal.get("a") == {"x": 1} and journal.get("b") is None
    journal.add("c", {"x": 3})
    assert Journal(path).get("c") == {"x": 3}


def test_usage_and_cost_cover_every_answer(served: Served) -> None:
    backend = served.load(price_input=2.5, price_output=10)
    served.answered(backend)
    pairs = zip(served.fake.bodies, _digests(served.fake), strict=True)
    input_tokens = sum(served.fake.answer(body, digest)["usage"]["prompt_tokens"] for body, digest in pairs)
    usage = backend.run_info()["usage"]
    assert usage == {
        "requests": N_SAMPLES,
        "input_tokens": input_tokens,
        "output_tokens": N_SAMPLES,
        "cost_usd": pytest.approx((input_tokens * 2.5 + N_SAMPLES * 10) / 1e6),
    }
    assert backend.run_info()["answering_models"] == [f"{MODEL}-2026-01-01"]


def _digests(fake: FakeOpenAI) -> list[str]:
    import hashlib

    return [hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() for body in fake.bodies]


def test_letter_likelihood_reads_the_logprobs_of_the_letter_tokens(
    served: Served, likelihood_task: LikelihoodMcqTask, tiny_vlm: Path
) -> None:
    from transformers import AutoProcessor

    from mill.backends.llm.letters import letter_tokens, render_letter_prompt

    backend = served.load(tokenizer=str(tiny_vlm), concurrency=4)
    results = list(backend.run_likelihood_mcq(likelihood_task, served.data))
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    tokens = letter_tokens(processor.tokenizer, render_letter_prompt(processor, "?"), likelihood_task.letters)
    probe, *asked = served.fake.bodies
    assert "image_url" not in json.dumps(probe)  # the endpoint was checked before any image was sent
    expected: dict[str, list[list[float]]] = {}
    for body, digest in zip(asked, _digests(served.fake)[1:], strict=True):
        assert body["logprob_token_ids"] == list(tokens.flat) and body["max_completion_tokens"] == 1
        scores = served.fake.answer(body, digest)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        combined, _ = tokens.combine(np.asarray([[s["logprob"] for s in scores]]))
        expected.setdefault(body["messages"][0]["content"][1]["text"], []).append(combined[0].tolist())
    for result in results:
        for prompt, row in zip(result.prompts, result.letter_logprobs, strict=True):
            assert any(row == pytest.approx(candidate) for candidate in expected[prompt])
    assert sum(len(r.keys) for r in results) == N_SAMPLES


def test_likelihood_is_refused_before_any_image_when_the_endpoint_returns_no_token_logprobs(
    served: Served, likelihood_task: LikelihoodMcqTask, tiny_vlm: Path
) -> None:
    served.fake.logprobs = False
    backend = served.load(tokenizer=str(tiny_vlm))
    with pytest.raises(BackendArgumentError, match=r"logprob_token_ids.*evaluate the benchmark's generative_mcq"):
        list(backend.run_likelihood_mcq(likelihood_task, served.data))
    assert "image_url" not in json.dumps(served.fake.bodies)


def test_likelihood_is_refused_when_the_tokenizer_cannot_be_loaded(
    served: Served, likelihood_task: LikelihoodMcqTask, tmp_path: Path
) -> None:
    backend = served.load(tokenizer=str(tmp_path / "missing"))
    with pytest.raises(BackendArgumentError, match=r"tokenizer .* cannot be loaded here.*generative_mcq"):
        list(backend.run_likelihood_mcq(likelihood_task, served.data))
    assert served.fake.chat_requests == 0


def test_likelihood_with_a_hub_tokenizer_the_machine_cannot_reach_is_refused_at_once(
    served: Served, likelihood_task: LikelihoodMcqTask, no_route_to_the_hub: list[str]
) -> None:
    backend = served.load(tokenizer="org/tokenizer")
    started = time.monotonic()
    with pytest.raises(BackendArgumentError) as caught:
        list(backend.run_likelihood_mcq(likelihood_task, served.data))
    assert time.monotonic() - started < 3
    assert "its tokenizer 'org/tokenizer' cannot be loaded here (openai backend: cannot fetch the tokenizer" in str(
        caught.value
    )
    assert "cannot reach the Hugging Face Hub" in str(caught.value) and "`hf download org/tokenizer`" in str(
        caught.value
    )
    assert no_route_to_the_hub == ["huggingface.co"]


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    import datetime as dt

    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, now) == 30.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"model": "m", "timeout": "0"}, "timeout='0' must be a number of seconds > 0"),
        ({"model": "m", "price_input": "-1"}, "price_input='-1' must be a price per million tokens >= 0"),
        ({"model": "m", "concurrency": "0"}, "concurrency='0' must be an integer >= 1"),
        ({"base_url": "http://127.0.0.1:1/v1"}, "missing argument 'model'; pass model=<the name the endpoint serves>"),
        ({"model": "m", "api_key": "sk-x"}, "unknown argument(s) 'api_key'"),
    ],
)
def test_arguments_are_checked_before_anything_is_sent(args: dict[str, str], message: str) -> None:
    with pytest.raises(BackendArgumentError) as raised:
        openai_plugin.capabilities(args)
    assert str(raised.value).startswith("openai backend: ") and message in str(raised.value)


def test_a_hosted_model_is_recorded_as_not_deterministic_and_never_scores_letters(
    served: Served, likelihood_task: LikelihoodMcqTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mill.backends.llm import served as served_module

    monkeypatch.setattr(served_module, "HOSTED_URL", served.fake.url)  # no base_url: "the hosted API"
    backend = openai_plugin.load({"model": MODEL}, RunContext(cache_dir=served.cache_dir))
    info = backend.info
    assert info.resolved_args["deterministic"] is False and info.device_type == "hosted"
    assert info.settings == {"temperature": "0.0"} and info.default_settings
    with pytest.raises(BackendArgumentError, match=r"a hosted API returns no log-probabilities.*generative_mcq"):
        list(backend.run_likelihood_mcq(likelihood_task, served.data))
    assert served.fake.chat_requests == 0


def test_after_ctrl_c_no_request_is_retried(served: Served) -> None:
    """A stopped endpoint (Ctrl-C) sends a throttled request no more: the process can end."""
    backend = served.load(concurrency=1)
    backend._endpoint.stop()
    served.fake.faults = ["429"]
    with pytest.raises(EndpointError, match="was not retried: the run stopped"):
        backend._endpoint.chat({"model": MODEL, "messages": [{"role": "user", "content": "?"}]})
    assert served.fake.chat_requests == 1
