"""Telling a host this machine cannot reach from a failure that may pass, without real network: a resolver that
fails, sockets with no route, a proxy, and a closed port on loopback."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest

from mill.core.network import route_problem, unreachable_reason

NO_DNS = socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_a_name_that_does_not_resolve_is_a_route_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise NO_DNS

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert route_problem("https://hub.example/x", env={}) == (
        "the host name does not resolve (Name or service not known); is this machine offline?"
    )


class _NoRouteSocket(socket.socket):
    def connect(self, address: Any) -> None:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")


def test_no_route_to_any_address_is_a_route_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "socket", _NoRouteSocket)
    assert route_problem("https://127.0.0.1:8443/x", env={}) == (
        "no route to the server (Network is unreachable); is this machine offline?"
    )


def test_a_reachable_host_or_a_closed_port_is_left_to_the_client() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens there: the connection would be refused, a failure that may pass (a server restarting).
    assert route_problem(f"http://127.0.0.1:{port}/x", env={}) is None
    refused = ConnectionError("cannot connect")
    refused.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert unreachable_reason(refused) is None
    assert unreachable_reason(TimeoutError("timed out")) is None


def test_behind_a_proxy_the_proxy_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise NO_DNS

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert route_problem("https://hub.example/x", env={"HTTPS_PROXY": "http://proxy:3128"}) is None
    assert route_problem("https://hub.example/x", env={"all_proxy": "socks5://proxy:1080"}) is None
    # A host the proxy is bypassed for is asked directly; a proxy for the other scheme does not count.
    assert route_problem("https://hub.example/x", env={"https_proxy": "http://p:1", "no_proxy": "hub.example"})
    assert route_problem("https://hub.example/x", env={"http_proxy": "http://p:1"})


def test_the_reason_is_found_among_the_causes() -> None:
    wrapped = ConnectionError("cannot connect")
    wrapped.__cause__ = OSError(errno.EHOSTUNREACH, "No route to host")
    assert unreachable_reason(wrapped) == "no route to the server (No route to host); is this machine offline?"
