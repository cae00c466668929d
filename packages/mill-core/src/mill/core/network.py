"""Whether a server can be reached from this machine at all, told apart from failures that may pass.

A host name that does not resolve, or an address this machine has no route to (a laptop offline, a compute node
without a gateway), is not cured by retrying for a minute; a timeout, a refused or dropped connection, or a 5xx
answer may be. Mill's own downloads classify the error they got (:func:`unreachable_reason`); before a request
is handed to a client that retries on its own (the Hugging Face Hub client retries every failed connection for
about 20 s), :func:`route_problem` asks the same two questions up front: does the name resolve, and is there a
route to one of its addresses. Asking sends nothing beyond the name lookup.
"""

from __future__ import annotations

import errno
import os
import socket
import urllib.parse
from collections.abc import Mapping

#: Failures no retry cures within minutes: there is no route to the network or the host.
NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH)


def unreachable_reason(error: BaseException | None) -> str | None:
    """Why the server cannot be reached from this machine at all (offline, no DNS, no route), or None when the
    failure may pass (a timeout, a refused or dropped connection), looking through the error's causes (pure)."""
    while error is not None:
        if isinstance(error, socket.gaierror):
            return f"the host name does not resolve ({error.strerror or error}); is this machine offline?"
        if isinstance(error, OSError) and error.errno in NO_ROUTE:
            return f"no route to the server ({error.strerror}); is this machine offline?"
        reason = getattr(error, "reason", None)
        error = reason if isinstance(reason, BaseException) else error.__cause__ or error.__context__
    return None


def route_problem(url: str, env: Mapping[str, str] = os.environ) -> str | None:
    """Why ``url``'s host cannot be reached from this machine (:func:`unreachable_reason`'s words), or None when
    it may be: its name resolves and some address has a route, or a proxy (``$https_proxy``, ``$all_proxy``...)
    stands between, which reaches hosts this machine cannot.

    The route is looked up by connecting a datagram socket, which sends no packet.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host or _proxied(parts.scheme, host, env):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, ValueError, UnicodeError) as error:
        return unreachable_reason(error)
    reasons = []
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.connect(address)
        except OSError as error:
            reason = unreachable_reason(error)
            if reason is None:  # some other trouble: let the client try, and retry, as it would
                return None
            reasons.append(reason)
        else:
            return None
    return reasons[0] if reasons else None


def _proxied(scheme: str, host: str, env: Mapping[str, str]) -> bool:
    """Whether requests to ``host`` go through a proxy named in ``env``, as urllib, requests and httpx read it:
    ``{scheme}_proxy`` or ``all_proxy``, unless ``no_proxy`` lists the host or a domain above it (pure)."""
    variables = {name.lower(): value.strip() for name, value in env.items()}
    if not (variables.get(f"{scheme}_proxy") or variables.get("all_proxy")):
        return False
    bypassed = [entry.strip().lstrip(".").lower() for entry in variables.get("no_proxy", "").split(",")]
    host = host.lower()
    return not any(entry == "*" or host == entry or host.endswith(f".{entry}") for entry in bypassed if entry)
