"""The ``openai`` backend: multiple choice answered by an OpenAI-compatible chat-completions endpoint, from a
local ``vllm serve`` to a hosted API.

Each sample is one request carrying the message the hf and vllm backends build (:mod:`messages`), its image
inline as a PNG, so the three backends ask the same question about the same pixels. ``concurrency`` requests
are in flight at once; :mod:`endpoint` retries what can be retried; every answer is journalled as it arrives
(:mod:`journal`), and a resumed run takes answers from the journal instead of asking again.

Generative multiple choice works everywhere. Letter likelihood needs an endpoint that returns the
log-probabilities of named token ids (vLLM's ``logprob_token_ids``) and the model's tokenizer (to spell the
letters); both are checked before any image is sent, and a hosted API (no ``base_url``) is never offered it.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from mill.backends.llm.args import OpenAIArgs, run_setting
from mill.backends.llm.base import GenerativeBackend
from mill.backends.llm.checkpoint import TOKENIZER_FILES, Checkpoint
from mill.backends.llm.endpoint import Endpoint, EndpointError, RetryPolicy
from mill.backends.llm.journal import Journal, request_digest
from mill.backends.llm.letters import (
    FloatArray,
    letter_batches,
    letter_tokens,
    no_thinking_kwargs,
    opened_reasoning,
)
from mill.backends.llm.messages import build_conversation, build_openai_request
from mill.core.backend import ModelInfo, RunContext
from mill.core.errors import BackendArgumentError, MillError, ModelNotFoundError
from mill.core.kinds.likelihood_mcq import LikelihoodMcqBatchResult, LikelihoodMcqTask
from mill.core.sample import SampleSource

INSTALL_HINT = "pip install './packages/mill-backends-llm[openai]'"
#: The endpoint of a hosted model when no ``base_url`` is given.
HOSTED_URL = "https://api.openai.com/v1"
_TOKEN_ID_PREFIX = "token_id:"


def import_openai() -> Any:
    """The ``openai`` module. Raises :class:`MillError` with the install command when absent."""
    try:
        import openai
    except ImportError as error:
        raise MillError(
            f"the openai backend needs the openai client, which is not installed ({error}); install it with: "
            f"{INSTALL_HINT}"
        ) from None
    return openai


def read_api_key(args: OpenAIArgs, environ: Mapping[str, str] = os.environ) -> str:
    """The key in ``$args.api_key_env``; a local server (``base_url`` given) needs none.

    Raises:
        BackendArgumentError: a hosted model and the variable is unset or empty (naming the variable only).
    """
    key = environ.get(args.api_key_env, "")
    if key:
        return key
    if args.base_url is not None:
        return "unused"  # vLLM without --api-key ignores the header; the client insists on one
    raise BackendArgumentError(
        f"openai backend: the environment variable {args.api_key_env} holding the API key is not set; export "
        "it, or name another variable with api_key_env=<NAME>"
    )


class ServedBackend(GenerativeBackend):
    """A model behind an OpenAI-compatible endpoint, answering both multiple-choice kinds.

    Generation runs the shared loop (:meth:`GenerativeBackend.run_mcq`); letter likelihood sends each
    question as a conversation, not as rendered text, so it has a loop of its own (:meth:`run_likelihood_mcq`).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        args: OpenAIArgs,
        info: ModelInfo,
        *,
        weights: str | None,
        num_workers: int,
        context: RunContext,
    ) -> None:
        batch_size = run_setting(args.batch_size, context.batch_size, 4 * args.concurrency)
        super().__init__(info, batch_size=batch_size, num_workers=num_workers, context=context)
        self._endpoint = endpoint
        self._args = args
        self._weights = weights
        self._journal = Journal()
        self._lock = threading.Lock()
        self._sent = 0
        self._reused = 0
        self._answering_models: set[str] = set()

    @classmethod
    def load(cls, args: OpenAIArgs, context: RunContext, backend: str = "openai") -> ServedBackend:
        """Connect to the endpoint of ``args`` and check that it serves ``args.model``; sends no image.

        Raises:
            BackendArgumentError: no key for a hosted model, or the endpoint does not list ``args.model``.
            EndpointError: the endpoint refuses the key or cannot be reached.
        """
        openai = import_openai()
        key = read_api_key(args)
        client = openai.OpenAI(api_key=key, base_url=args.base_url or HOSTED_URL, max_retries=0, timeout=args.timeout)
        hint = f"check the key in ${args.api_key_env} (or name another variable with api_key_env=<NAME>)"
        endpoint = Endpoint(client, RetryPolicy(args.max_retries), secret=key, key_hint=hint)
        served = endpoint.list_models()
        entry = None if served is None else next((m for m in served if m.get("id") == args.model), None)
        if served is not None and entry is None:
            names = ", ".join(sorted(str(m.get("id")) for m in served)[:20]) or "none"
            raise BackendArgumentError(
                f"{backend} backend: {endpoint.url} does not serve model={args.model!r}; it serves: {names}"
            )
        # vLLM reports the weights it loaded as "root" (a hub id or a directory): the tokenizer likelihood needs.
        weights = str(entry["root"]) if entry is not None and entry.get("root") else None
        hosted = args.base_url is None
        settings = {"temperature": repr(args.temperature)}
        if args.seed is not None:
            settings["seed"] = str(args.seed)
        num_workers = run_setting(args.num_workers, context.num_workers, 0)
        info = ModelInfo(
            identity=args.model,
            settings=settings,
            # What changes answers or says where they came from; speed and price arguments are in run_info.
            resolved_args={
                "model": args.model,
                "base_url": endpoint.url,
                "temperature": args.temperature,
                "seed": args.seed,
                "tokenizer": args.tokenizer,
                # A hosted model may change behind its name and samples even at temperature 0.
                "deterministic": not hosted and args.temperature == 0.0,
            },
            revision=_reported_name(entry, weights),
            # The client carries requests and changes no answer: its version is in run_info, not the identity,
            # so upgrading it does not orphan a run's journal.
            library_versions={},
            device_type="hosted" if hosted else "served",
            default_settings=args.temperature == 0.0 and args.seed is None,
        )
        return cls(endpoint, args, info, weights=weights, num_workers=num_workers, context=context)

    def keep_journal(self, path: Path | None) -> None:
        self._journal = Journal(path)

    def run_info(self) -> Mapping[str, Any]:
        """Speed settings, how many requests went out and came from the journal, retries, and token usage (with
        cost when prices were given) over every answer the run paid for, in this process or an earlier one."""
        usage = _usage(self._journal.answers())
        if self._args.price_input is not None and self._args.price_output is not None:
            usage["cost_usd"] = (
                usage["input_tokens"] * self._args.price_input + usage["output_tokens"] * self._args.price_output
            ) / 1e6
        with self._lock:
            return {
                **super().run_info(),
                "openai_client": version("openai"),
                "concurrency": self._args.concurrency,
                "timeout_s": self._args.timeout,
                "max_retries": self._args.max_retries,
                "requests_sent": self._sent,
                "requests_from_journal": self._reused,
                "retries": self._endpoint.retries,
                "answering_models": sorted(self._answering_models),
                "usage": usage,
                "prices_per_million_tokens": {"input": self._args.price_input, "output": self._args.price_output},
            }

    def generate(self, images: Sequence[Any], prompts: list[str], max_new_tokens: int) -> list[str]:
        """Answers to ``prompts``, each about the image at the same position, at the run's temperature."""
        requests = [
            functools.partial(self._body, image, prompt, max_new_tokens)
            for image, prompt in zip(images, prompts, strict=True)
        ]
        answers = self._ask_all(requests, {"return_token_ids": True} if self._args.token_ids else None)
        return [_content(answer, self._endpoint.url) for answer in answers]

    @property
    def chat_processor(self) -> Any:
        raise NotImplementedError("a served model renders its own prompts; see run_likelihood_mcq")

    def next_token_logprobs(self, images: Sequence[Any], texts: list[str], token_ids: Sequence[int]) -> FloatArray:
        raise NotImplementedError("a served model is sent conversations, not rendered texts; see run_likelihood_mcq")

    def run_likelihood_mcq(self, task: LikelihoodMcqTask, data: SampleSource) -> Iterator[LikelihoodMcqBatchResult]:
        """Score every sample's option letters by the log-probabilities the endpoint returns for their tokens.

        Raises:
            BackendArgumentError: before any image is sent, when the endpoint is hosted, the tokenizer cannot
                be loaded, or the endpoint does not return log-probabilities of named token ids.
        """
        processor = self._likelihood_processor(task)
        extra_template = no_thinking_kwargs(processor)
        for item in letter_batches(
            task,
            data,
            processor,
            batch_size=self._batch_size,
            num_workers=self._num_workers,
            progress=self._context.progress,
        ):
            ids = list(item.tokens.flat)
            extra = _logprob_fields(ids, extra_template)
            requests = [
                functools.partial(self._body, image, prompt, 1, logprobs=True)
                for image, prompt in zip(item.batch.images, item.prompts, strict=True)
            ]
            answers = self._ask_all(requests, extra)
            rows = [_token_logprobs(answer, ids, self._endpoint.url) for answer in answers]
            yield item.result(np.asarray(rows, dtype=np.float64).reshape(len(rows), len(ids)))

    def _likelihood_processor(self, task: LikelihoodMcqTask) -> Any:
        """The tokenizer's processor, once the endpoint has shown it returns log-probabilities of named ids."""
        refuse = (
            f"openai backend: {self._args.model} at {self._endpoint.url} cannot serve the likelihood_mcq variant "
            f"{task.variant!r}"
        )
        instead = "; evaluate the benchmark's generative_mcq variant instead"
        if self._args.base_url is None:
            raise BackendArgumentError(f"{refuse}: a hosted API returns no log-probabilities of chosen tokens{instead}")
        path = self._args.tokenizer or self._weights or self._args.model
        try:
            from transformers import AutoProcessor

            checkpoint = Checkpoint(path, "openai", None, False)
            checkpoint.offline_unless_hub_reachable(TOKENIZER_FILES, what="the tokenizer")
            processor = AutoProcessor.from_pretrained(path, **checkpoint.load_kwargs())  # type: ignore[no-untyped-call]
        except (OSError, ValueError, ModelNotFoundError) as error:
            raise BackendArgumentError(
                f"{refuse}: its tokenizer {path!r} cannot be loaded here ({str(error).splitlines()[0]}); pass "
                f"tokenizer=<local directory or hub id>{instead}"
            ) from None
        rendered = str(
            processor.apply_chat_template(
                build_conversation("?"), add_generation_prompt=True, tokenize=False, **no_thinking_kwargs(processor)
            )
        )
        if opened_reasoning(rendered) is not None:
            raise BackendArgumentError(
                f"{refuse}: its chat template opens a reasoning block the endpoint would render open{instead}, "
                "or use the vllm backend"
            )
        ids = list(letter_tokens(processor.tokenizer, rendered, task.letters).flat)
        probe = {
            "model": self._args.model,
            "messages": [{"role": "user", "content": "Answer with a letter."}],
            "max_completion_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
        }
        try:
            answer = self._endpoint.chat(probe, _logprob_fields(ids, {}))
            _token_logprobs(answer, ids, self._endpoint.url)
        except EndpointError as error:
            raise BackendArgumentError(
                f"{refuse}: it does not return the log-probabilities of named token ids (vLLM's "
                f"logprob_token_ids) ({error}){instead}"
            ) from None
        return processor

    def _body(self, image: Any, prompt: str, max_tokens: int, *, logprobs: bool = False) -> dict[str, Any]:
        """The request asking ``prompt`` about ``image`` (encoded here, in a worker thread: PNG encoding takes
        longer than sending a request to a local server)."""
        body: dict[str, Any] = {
            "model": self._args.model,
            "messages": build_openai_request(image, prompt),
            "max_completion_tokens": max_tokens,
            "temperature": self._args.temperature,
        }
        if self._args.seed is not None:
            body["seed"] = self._args.seed
        if logprobs:
            body["logprobs"] = True
        return body

    def _ask_all(
        self, requests: Sequence[Callable[[], dict[str, Any]]], extra: Mapping[str, Any] | None
    ) -> list[dict[str, Any]]:
        """The answer to each request (a function building its body), from the journal or the endpoint,
        ``concurrency`` at a time."""
        self._endpoint.restart()
        executor = ThreadPoolExecutor(max_workers=self._args.concurrency, thread_name_prefix="mill-openai")
        futures: list[Future[dict[str, Any]]] = [executor.submit(self._ask, build, extra) for build in requests]
        try:
            answers = [future.result() for future in futures]
        except Exception:
            # Queued requests are never sent; those in flight finish (and are journalled) before the error
            # is reported, so nothing is still being asked once the run has stopped.
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        except KeyboardInterrupt:
            # Ctrl-C does not wait: requests waiting to be retried give up, and what is in flight is journalled
            # if it is answered before the process ends.
            self._endpoint.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown()
        return answers

    def _ask(self, build: Callable[[], dict[str, Any]], extra: Mapping[str, Any] | None) -> dict[str, Any]:
        body = build()
        digest = request_digest({**body, **(extra or {})})
        kept = self._journal.get(digest)
        if kept is not None:
            with self._lock:
                self._reused += 1
            return kept
        answer = self._endpoint.chat(body, extra)
        self._journal.add(digest, answer)
        with self._lock:
            self._sent += 1
            if isinstance(answer.get("model"), str):
                self._answering_models.add(answer["model"])
        return answer


def _reported_name(entry: Mapping[str, Any] | None, weights: str | None) -> str | None:
    """What the endpoint says it serves: its model id, and the weights behind it where it names them."""
    if entry is None:
        return None
    name = str(entry.get("id"))
    return f"{name}@{weights}" if weights and weights != name else name


def _logprob_fields(ids: list[int], template_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM's request fields for the log-probabilities of exactly ``ids``, reported by token id, before any
    logits processing (so over the whole vocabulary); ``allowed_token_ids`` makes the one sampled token a
    letter, which costs nothing. ``return_token_ids`` reports the prompt's token ids (recorded, compared)."""
    fields: dict[str, Any] = {
        "logprob_token_ids": ids,
        "allowed_token_ids": ids,
        "return_tokens_as_token_ids": True,
        "return_token_ids": True,
    }
    if template_kwargs:
        fields["chat_template_kwargs"] = dict(template_kwargs)
    return fields


def _content(answer: Mapping[str, Any], url: str) -> str:
    message = answer["choices"][0].get("message") if isinstance(answer["choices"][0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if content is None:
        return ""  # a refusal or an empty answer: scored as unparsed, like an empty generation
    if not isinstance(content, str):
        raise EndpointError(f"openai backend: {url}/chat/completions answered with a message whose content is not text")
    return content


def _token_logprobs(answer: Mapping[str, Any], ids: list[int], url: str) -> list[float]:
    """The log-probability the answer reports for each of ``ids`` at its first generated token.

    Raises:
        EndpointError: the answer does not report every one of ``ids`` (by id) there.
    """
    found: dict[int, float] = {}
    try:
        first = answer["choices"][0]["logprobs"]["content"][0]
        for candidate in [first, *first.get("top_logprobs", [])]:
            token = str(candidate["token"])
            if token.startswith(_TOKEN_ID_PREFIX):
                found[int(token.removeprefix(_TOKEN_ID_PREFIX))] = float(candidate["logprob"])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        pass
    missing = [token for token in ids if token not in found]
    if missing:
        raise EndpointError(
            f"{url}/chat/completions returned no log-probability for token ids {missing[:5]} "
            f"(it returned {sorted(found)[:10] or 'none'})"
        )
    return [found[token] for token in ids]


def _usage(answers: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """Requests, input (prompt) and output (completion) tokens over ``answers``."""
    requests = input_tokens = output_tokens = 0
    for answer in answers:
        requests += 1
        usage = answer.get("usage")
        if isinstance(usage, dict):
            input_tokens += int(usage.get("prompt_tokens") or 0)
            output_tokens += int(usage.get("completion_tokens") or 0)
    return {"requests": requests, "input_tokens": input_tokens, "output_tokens": output_tokens}
