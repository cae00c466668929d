"""The ``mill_testing`` pytest plugin (entry point ``pytest11``): fixtures every Mill test session shares.

Importing this module must stay cheap and torch-free: pytest loads it in every session, the core one
included, so it imports mill-core only.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from mill.core.metrics import MetricValue
from mill.core.results import RunFacts
from mill.testing.cli import Mill, run_in_process
from mill.testing.facts import FACTS, ZERO_SHOT_METRICS
from mill.testing.fake_openai import FakeOpenAI, start_fake_openai
from mill.testing.loopback import base_url, start_server


@pytest.fixture(scope="session")
def mill_in_process() -> Mill:
    """``mill_in_process(*argv) -> Outcome``: the ``mill`` command run in this process."""
    return run_in_process


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """``serve(directory, cut_short=()) -> base_url``: a real HTTP server on 127.0.0.1 serving ``directory``
    (see :class:`~mill.testing.loopback.CutShortHandler`), shut down after the test."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path, cut_short: Collection[str] = ()) -> str:
        servers.append(start_server(directory, cut_short))
        return base_url(servers[-1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible endpoint on 127.0.0.1 (:mod:`mill.testing.fake_openai`), its key exported as
    ``OPENAI_API_KEY``; its ``url`` is the ``base_url`` to give the openai backend."""
    fake = FakeOpenAI()
    monkeypatch.setenv("OPENAI_API_KEY", fake.key)
    server = start_fake_openai(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def facts() -> RunFacts:
    """One full ImageNet zero-shot run's facts (:data:`~mill.testing.facts.FACTS`); vary it with ``evolve``."""
    return FACTS


@pytest.fixture
def zero_shot() -> dict[str, MetricValue]:
    """Zero-shot metrics to store with the ``facts`` fixture (:data:`~mill.testing.facts.ZERO_SHOT_METRICS`)."""
    return dict(ZERO_SHOT_METRICS)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache that huggingface_hub (and so open_clip and transformers) use, offline; seed
    it with :func:`~mill.testing.hub.seed_hub_cache`."""
    # Imported here: sessions without huggingface_hub (core, data) load this plugin too.
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub read the environment at import: its module constants are what its functions consult.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _hub_online_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub client's offline mode off, as a user who did not set HF_HUB_OFFLINE has it; whatever Mill sets
    (the client's constant, the environment its subprocesses read) is restored after the test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@pytest.fixture
def no_route_to_the_hub(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A machine whose resolver knows no host names (addresses such as 127.0.0.1 still connect), with
    ``hub_cache`` and the hub client's offline mode off; the names looked up are recorded (in the order asked)."""
    _hub_online_mode(monkeypatch)
    looked_up: list[str] = []
    resolve = socket.getaddrinfo

    def no_dns(host: str, *args: Any, **kwargs: Any) -> Any:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            looked_up.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    return looked_up


@pytest.fixture
def reachable_hub(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that can reach every host (each name resolves to loopback, which has a route), with
    ``hub_cache`` and the hub client's offline mode off. Nothing may actually connect: use it for what Mill
    decides before the client is called."""
    _hub_online_mode(monkeypatch)
    loopback = socket.getaddrinfo("127.0.0.1", 443, type=socket.SOCK_DGRAM)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: loopback)
