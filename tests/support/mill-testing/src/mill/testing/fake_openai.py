"""A fake OpenAI-compatible endpoint on 127.0.0.1 for the openai backend's tests: ``GET /v1/models`` and
``POST /v1/chat/completions``, with faults a test queues (throttling, server errors, a hang, a body that is
not JSON, a refused key, a dropped connection) and a count of the requests it answered, by request body.

Answers are deterministic functions of the request: the letter answered and the letter log-probabilities
(when the request names token ids, as vLLM's ``logprob_token_ids``) depend on the whole body, images
included, so a test can tell that every sample was asked its own question.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections import Counter
from typing import Any

from attrs import define, field

#: The key the fake endpoint accepts (tests put it in the environment and grep for it afterwards).
KEY = "sk-mill-fake-3c1f0b7e9d2a4c68"
MODEL = "fake-vlm"
#: Chat requests the fake answers before refusing every further one: a runaway retry loop ends the test.
MAX_REQUESTS = 400
FAULTS = ("429", "500", "timeout", "malformed", "401", "drop")


@define
class FakeOpenAI:
    """The fake endpoint's behaviour and record; tests change the behaviour between requests.

    ``faults`` are consumed one per chat request (from the front); ``fail_after`` answers 503 to every chat
    request once that many have been answered; ``answered`` counts the 200 answers per request digest.
    """

    model: str = MODEL
    root: str | None = None
    key: str = KEY
    retry_after: str = "3"
    hang_seconds: float = 1.5
    #: Seconds every answer takes (a stand-in for a model's time; 0 in tests, set by benchmarks).
    latency: float = 0.0
    max_requests: int = MAX_REQUESTS
    logprobs: bool = True
    fail_after: int | None = None
    faults: list[str] = field(factory=list)
    answered: Counter[str] = field(factory=Counter)
    chat_requests: int = 0
    bodies: list[dict[str, Any]] = field(factory=list)
    lock: threading.Lock = field(factory=threading.Lock)
    url: str = ""

    def next_fault(self) -> str | None:
        with self.lock:
            self.chat_requests += 1
            if self.chat_requests > self.max_requests:
                return "500"
            if self.fail_after is not None and sum(self.answered.values()) >= self.fail_after:
                return "503"
            return self.faults.pop(0) if self.faults else None

    def record(self, body: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self.lock:
            self.answered[digest] += 1
            self.bodies.append(body)
        return digest

    def answer(self, body: dict[str, Any], digest: str) -> dict[str, Any]:
        """A chat completion for ``body``: a letter, usage, and the log-probabilities of named token ids."""
        value = int(digest[:8], 16)
        text = json.dumps(body.get("messages"))
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": "ABCD"[value % 4]},
            "finish_reason": "stop",
        }
        ids = body.get("logprob_token_ids")
        if self.logprobs and isinstance(ids, list) and ids:
            scores = [{"token": f"token_id:{i}", "logprob": -0.25 * (1 + (value + n) % 9)} for n, i in enumerate(ids)]
            choice["logprobs"] = {"content": [{**scores[0], "top_logprobs": scores}]}
        return {
            "id": f"chatcmpl-{digest[:12]}",
            "object": "chat.completion",
            "created": 0,
            "model": f"{self.model}-2026-01-01",
            "choices": [choice],
            "usage": {"prompt_tokens": 20 + len(text) // 100, "completion_tokens": 1, "total_tokens": 0},
        }


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        data = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        if given == f"Bearer {self.fake.key}":
            return True
        # As hosted APIs do, quote the key that was given: the backend must not repeat it.
        self._send(401, {"error": {"message": f"Incorrect API key provided: {given.removeprefix('Bearer ')}"}})
        return False

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/models":
            self._send(404, {"error": {"message": "not found"}})
            return
        entry = {"id": self.fake.model, "object": "model", "owned_by": "mill-tests"}
        if self.fake.root is not None:
            entry["root"] = self.fake.root
        self._send(200, {"object": "list", "data": [entry]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found"}})
            return
        fault = self.fake.next_fault()
        if fault == "401":
            self.fake.key = "sk-rotated-" + self.fake.key  # the key the test exported is now wrong
        if not self._authorised():
            return
        if fault == "429":
            self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": self.fake.retry_after})
        elif fault in ("500", "503"):
            self._send(int(fault), {"error": {"message": "the server is overloaded"}})
        elif fault == "timeout":
            time.sleep(self.fake.hang_seconds)
            self.close_connection = True
        elif fault == "drop":
            self.close_connection = True  # nothing written: the client sees the connection close
        elif fault == "malformed":
            self._send(200, b'{"choices": [ {"message": ')
        else:
            time.sleep(self.fake.latency)
            self._send(200, self.fake.answer(body, self.fake.record(body)))


def start_fake_openai(fake: FakeOpenAI) -> http.server.ThreadingHTTPServer:
    """Serve ``fake`` on a free port of 127.0.0.1 from a daemon thread (its ``url`` set, ending in ``/v1``);
    the caller shuts the server down."""
    handler = type("FakeOpenAIHandler", (_Handler,), {"fake": fake})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return server
