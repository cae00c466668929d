"""One request to an OpenAI-compatible endpoint, sent until it is answered or cannot be.

Mill owns the retries (the ``openai`` client is built with ``max_retries=0``), so one policy decides them
and counts them: a throttled request (429, 408) waits what the server's ``Retry-After`` asks, or an
exponential backoff with jitter when it asks nothing; a server error (5xx), a timeout or a dropped connection
is retried the same way. Anything else (a rejected key, a bad request, an answer that is not JSON) ends the
run with one :class:`EndpointError` naming the URL and the status. The API key never reaches a message: the
server's own words are left out for 401/403 (they may quote the key) and the key is masked in any other.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen

from mill.core.errors import MillError

log = logging.getLogger(__name__)

#: Statuses that mean "try again later": throttled (429), request timeout (408), and every server error.
RETRIED_STATUSES = frozenset({408, 429})
_MAX_MESSAGE = 300


class EndpointError(MillError):
    """An endpoint refused a request, answered with something that is not an answer, or stayed unavailable
    through every retry."""


@frozen
class RetryPolicy:
    """How long to wait before attempt ``attempt + 1`` (``attempt`` counts from 1): what the server asked
    (``Retry-After``, capped at ``max_delay``), else ``base_delay * 2**(attempt - 1)`` capped at ``max_delay``
    with up to a quarter of it added at random, so many clients throttled together do not return together."""

    max_retries: int
    base_delay: float = 1.0
    max_delay: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = min(self.base_delay * 2.0 ** (attempt - 1), self.max_delay)
        return backoff * (1.0 + random.random() / 4)


def retry_after_seconds(headers: Mapping[str, str], now: dt.datetime | None = None) -> float | None:
    """The wait a response's ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms`` asks for."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return float(milliseconds) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds()


def wait(seconds: float, stop: threading.Event) -> None:
    """How :class:`Endpoint` waits before a retry, cut short by ``stop`` (a function of this module, so tests
    count the waits)."""
    stop.wait(seconds)


def mask(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


class Endpoint:
    """The chat-completions route of one endpoint, through an ``openai`` client built with ``max_retries=0``.

    Thread-safe: many requests may be in flight at once; :attr:`retries` counts the retries of all of them.
    """

    def __init__(
        self,
        client: Any,
        policy: RetryPolicy,
        *,
        secret: str,
        key_hint: str,
    ) -> None:
        self._client = client
        self._policy = policy
        self._secret = secret
        self._key_hint = key_hint
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.retries = 0
        self.url = str(client.base_url).rstrip("/")

    def stop(self) -> None:
        """Send no more retries (Ctrl-C): a request waiting to be retried gives up, one in flight finishes."""
        self._stop.set()

    def restart(self) -> None:
        """Retry again after :meth:`stop` (a backend used for another run in the same process)."""
        self._stop.clear()

    def list_models(self) -> list[dict[str, Any]] | None:
        """The models the endpoint lists (``GET /models``), or None when it has no such route (404).

        Raises:
            EndpointError: as :meth:`chat` does.
        """
        import openai

        try:
            document = self._send("GET", "/models", lambda: self._client.models.with_raw_response.list())
        except EndpointError as error:
            if isinstance(error.__cause__, openai.NotFoundError):
                return None
            raise
        data = document.get("data")
        if not isinstance(data, list):
            raise EndpointError(self._malformed("GET", "/models", "no 'data' list"))
        return [entry for entry in data if isinstance(entry, dict)]

    def chat(self, body: Mapping[str, Any], extra_body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The endpoint's JSON answer to the chat-completions request ``body`` (plus non-standard fields
        ``extra_body``, such as vLLM's), retried as the module describes.

        Raises:
            EndpointError: the request was refused (4xx other than 408/429), the answer is not a JSON object
                with ``choices``, or every retry failed.
        """

        def send() -> Any:
            return self._client.chat.completions.with_raw_response.create(**body, extra_body=extra_body or None)

        document = self._send("POST", "/chat/completions", send)
        if not isinstance(document.get("choices"), list) or not document["choices"]:
            raise EndpointError(self._malformed("POST", "/chat/completions", "no 'choices'"))
        return document

    def _send(self, method: str, route: str, send: Callable[[], Any]) -> dict[str, Any]:
        import openai

        attempt = 0
        while True:
            attempt += 1
            try:
                raw = send()
            except openai.APIStatusError as error:
                status = error.status_code
                if (status in RETRIED_STATUSES or status >= 500) and attempt <= self._policy.max_retries:
                    delay = self._policy.delay(attempt, retry_after_seconds(error.response.headers))
                    self._retrying(method, route, f"status {status}", attempt, delay)
                    continue
                raise EndpointError(self._refused(method, route, error, attempt)) from error
            except openai.APIConnectionError as error:
                # APITimeoutError is a connection error too: the request may have reached the server, but
                # no answer came back, so nothing was paid for that Mill can use.
                cause = "timed out" if isinstance(error, openai.APITimeoutError) else "lost its connection"
                if attempt <= self._policy.max_retries:
                    self._retrying(method, route, cause, attempt, self._policy.delay(attempt, None))
                    continue
                raise EndpointError(
                    f"openai backend: {method} {self.url}{route} {cause} on each of {attempt} attempts "
                    f"({mask(str(error), self._secret)}); check that the endpoint is up, or raise timeout= or "
                    "max_retries= (re-running the same command resumes the run)"
                ) from error
            return self._parse(method, route, raw.text)

    def _retrying(self, method: str, route: str, cause: str, attempt: int, seconds: float) -> None:
        with self._lock:
            self.retries += 1
        log.info("%s %s%s: %s; retry %d in %.1fs", method, self.url, route, cause, attempt, seconds)
        wait(seconds, self._stop)
        if self._stop.is_set():
            stopped = f"openai backend: {method} {self.url}{route} ({cause}) was not retried: the run stopped"
            raise EndpointError(stopped)

    def _parse(self, method: str, route: str, text: str) -> dict[str, Any]:
        try:
            document = json.loads(text)
        except ValueError:
            raise EndpointError(self._malformed(method, route, "not JSON")) from None
        if not isinstance(document, dict):
            raise EndpointError(self._malformed(method, route, "not a JSON object"))
        return document

    def _malformed(self, method: str, route: str, what: str) -> str:
        return (
            f"openai backend: {method} {self.url}{route} answered status 200 with a body that is {what}; "
            "is base_url an OpenAI-compatible endpoint (it usually ends in /v1)?"
        )

    def _refused(self, method: str, route: str, error: Any, attempt: int) -> str:
        status = error.status_code
        where = f"openai backend: {method} {self.url}{route} answered status {status}"
        if attempt > 1:
            where += f" after {attempt} attempts"
        if status in (401, 403):
            # The server's message may quote the key it was given (OpenAI's quotes part of it): leave it out.
            return f"{where} (the API key was refused); {self._key_hint}"
        message = mask(_server_message(error), self._secret)
        advice = (
            "the endpoint stayed unavailable: try again later or raise max_retries="
            if status in RETRIED_STATUSES or status >= 500
            else "check model= and the endpoint's documentation"
        )
        return f"{where}: {message}; {advice}"


def _server_message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(text, str):
            return text[:_MAX_MESSAGE]
    return str(getattr(error, "message", "") or "no message")[:_MAX_MESSAGE]
