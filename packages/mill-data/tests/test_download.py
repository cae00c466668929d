"""Downloads over a network that stalls, drops connections and refuses, against a real loopback server."""

from __future__ import annotations

import base64
import errno
import http.server
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
from attrs import Factory, define
from huggingface_hub import utils as hub_errors

from mill.core.errors import DataError
from mill.data import download
from mill.data.download import RetryPolicy, fetch, refusal_message, retry_hub
from mill.data.source import resolve_shards

#: The conftest replaces it (the fake hub is reachable); the test of an offline machine puts it back.
REAL_HUB_ROUTE_PROBLEM = download.hub_route_problem
BODY = bytes(range(256)) * 400  # 100 KiB, every byte position recognisable
TIMEOUT_S = 0.3


@define
class Plan:
    """What the server does for one path. ``faults`` are used up one per request, in order: ``stall``
    (send half the body, then nothing), ``drop`` (half the body, then close), ``503``; once they are used
    up the file is served whole, from the requested offset when ``ranges`` is true."""

    body: bytes = BODY
    faults: list[str] = Factory(list)
    ranges: bool = True
    status: int | None = None
    auth: str | None = None
    seen: list[dict[str, str | None]] = Factory(list)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        plan: Plan | None = self.server.plans.get(self.path)
        if plan is None:
            self.send_error(404)
            return
        plan.seen.append({"range": self.headers.get("Range"), "auth": self.headers.get("Authorization")})
        if plan.auth is not None and self.headers.get("Authorization") != plan.auth:
            self.send_error(401)
            return
        if plan.status is not None:
            self.send_error(plan.status)
            return
        fault = plan.faults.pop(0) if plan.faults else None
        if fault == "503":
            self.send_error(503)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match[1]) if match and plan.ranges else 0
        body = plan.body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(plan.body) - 1}/{len(plan.body)}")
        self.end_headers()
        if fault == "trickle":  # a byte at a time, never silent long enough for the timeout
            for index in range(len(body)):
                if self.server.release.is_set():
                    break
                try:
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    break
                self.server.release.wait(0.02)
            self.close_connection = True
            return
        if fault in ("stall", "drop"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if fault == "stall":
                self.server.release.wait(5)  # far past the client's timeout; teardown releases it
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Any]:
    """A ThreadingHTTPServer on 127.0.0.1; ``server.plans[path] = Plan(...)`` says how each path behaves."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.plans = {}  # type: ignore[attr-defined]
    httpd.release = threading.Event()  # type: ignore[attr-defined]
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.release.set()  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _fetch(server: Any, path: str, target: Path, sleeps: list[float], **policy: Any) -> None:
    args = {"timeout_s": TIMEOUT_S, "backoff_s": 0.001} | policy
    fetch(server.url + path, target, policy=RetryPolicy(**args), sleep=sleeps.append)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- the retry policy ------------------------------------------------------------------------------------


def test_default_policy_is_thirty_seconds_and_five_retries_from_1_to_16_s() -> None:
    policy = RetryPolicy.from_env({})
    assert policy.timeout_s == 30
    assert policy.delays() == (1, 2, 4, 8, 16)


def test_policy_from_env() -> None:
    policy = RetryPolicy.from_env({"MILL_HTTP_TIMEOUT": "5", "MILL_HTTP_BACKOFF": "0.5"})
    assert policy.timeout_s == 5
    assert policy.delays() == (0.5, 1, 2, 4, 8)


@pytest.mark.parametrize(
    ("name", "value"), [("MILL_HTTP_TIMEOUT", "soon"), ("MILL_HTTP_TIMEOUT", "0"), ("MILL_HTTP_BACKOFF", "-1")]
)
def test_bad_policy_env_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(DataError, match=rf"\${name} is '{value}': set it to a number of seconds"):
        RetryPolicy.from_env({name: value})


# --- stalls and dropped connections ----------------------------------------------------------------------


def test_stalled_server_times_out_and_the_retry_resumes_with_range(
    server: Any, tmp_path: Path, sleeps: list[float]
) -> None:
    plan = server.plans["/0.tar"] = Plan(faults=["stall"])
    _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps)
    assert (tmp_path / "0.tar").read_bytes() == BODY
    assert [s["range"] for s in plan.seen] == [None, f"bytes={len(BODY) // 2}-"]
    assert sleeps == [0.001]
    assert _files(tmp_path) == ["0.tar"]  # no partial file left beside it


def test_dropped_connections_resume_where_they_stopped(server: Any, tmp_path: Path, sleeps: list[float]) -> None:
    plan = server.plans["/0.tar"] = Plan(faults=["drop", "drop"])
    _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps)
    assert (tmp_path / "0.tar").read_bytes() == BODY
    half = len(BODY) // 2
    assert [s["range"] for s in plan.seen] == [None, f"bytes={half}-", f"bytes={half + (len(BODY) - half) // 2}-"]
    assert sleeps == [0.001, 0.002]


def test_a_server_ignoring_range_is_downloaded_again_from_the_start(
    server: Any, tmp_path: Path, sleeps: list[float]
) -> None:
    plan = server.plans["/0.tar"] = Plan(faults=["drop", "stall"], ranges=False)
    _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps)
    # Not the first half twice over: the 200 answer restarted the file.
    assert (tmp_path / "0.tar").read_bytes() == BODY
    assert [s["range"] for s in plan.seen] == [None, f"bytes={len(BODY) // 2}-", f"bytes={len(BODY) // 2}-"]


def test_a_server_that_keeps_dropping_is_retried_five_times_then_named(
    server: Any, tmp_path: Path, sleeps: list[float]
) -> None:
    plan = server.plans["/0.tar"] = Plan(faults=["drop"] * 10, ranges=False)
    with pytest.raises(DataError) as caught:
        _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps, backoff_s=0.01)
    assert str(caught.value) == (
        f"cannot download {server.url}/0.tar: the server closed the connection after {len(BODY) // 2} of "
        f"{len(BODY)} bytes (gave up after 6 attempts)"
    )
    assert len(plan.seen) == 6
    assert sleeps == [0.01, 0.02, 0.04, 0.08, 0.16]
    assert _files(tmp_path) == []


def test_a_server_that_keeps_stalling_says_it_timed_out(server: Any, tmp_path: Path, sleeps: list[float]) -> None:
    server.plans["/0.tar"] = Plan(faults=["stall"] * 3)
    with pytest.raises(DataError) as caught:
        _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps, retries=1)
    assert str(caught.value) == (
        # Each attempt resumed and got half of what was missing before the server went quiet.
        f"cannot download {server.url}/0.tar: no data from the server for {TIMEOUT_S:g} s after 76800 of 102400 "
        "bytes ($MILL_HTTP_TIMEOUT sets how long to wait) (gave up after 2 attempts)"
    )
    assert _files(tmp_path) == []


def test_a_server_trickling_under_the_minimum_rate_is_abandoned_like_a_stall(
    server: Any, tmp_path: Path, sleeps: list[float]
) -> None:
    # A byte every 20 ms never trips the timeout (it covers only silence); 50 bytes/s is under 1000.
    plan = server.plans["/0.tar"] = Plan(faults=["trickle"])
    _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps, min_rate=1000, rate_window_s=0.5)
    assert (tmp_path / "0.tar").read_bytes() == BODY
    assert len(plan.seen) == 2 and plan.seen[1]["range"] is not None  # resumed after what trickled in


def test_a_server_that_keeps_trickling_is_named_with_the_rate(server: Any, tmp_path: Path, sleeps: list[float]) -> None:
    server.plans["/0.tar"] = Plan(faults=["trickle"] * 3)
    with pytest.raises(DataError) as caught:
        _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps, retries=1, min_rate=1000, rate_window_s=0.5)
    message = str(caught.value)
    assert re.fullmatch(
        rf"cannot download {re.escape(server.url)}/0\.tar: the server sent \d+ bytes in the last 0\.5 s, under 1000 "
        r"bytes/s \(\$MILL_HTTP_MIN_RATE and \$MILL_HTTP_RATE_WINDOW set the limit\) after \d+ of 102400 bytes "
        r"\(gave up after 2 attempts\)",
        message,
    ), message
    assert _files(tmp_path) == []


def test_default_transfer_deadline_is_1_kib_per_second_over_a_minute() -> None:
    policy = RetryPolicy.from_env({})
    assert (policy.min_rate, policy.rate_window_s) == (1024, 60)
    custom = RetryPolicy.from_env({"MILL_HTTP_MIN_RATE": "0", "MILL_HTTP_RATE_WINDOW": "10"})
    assert (custom.min_rate, custom.rate_window_s) == (0, 10)
    with pytest.raises(DataError, match=r"\$MILL_HTTP_MIN_RATE is 'fast': set it to a number of bytes per second"):
        RetryPolicy.from_env({"MILL_HTTP_MIN_RATE": "fast"})


def test_a_host_that_does_not_resolve_fails_at_once(tmp_path: Path, sleeps: list[float]) -> None:
    # An offline machine: retrying for half a minute would cure nothing. (.invalid never resolves, RFC 6761.)
    url = "http://mill-test.invalid/0.tar"
    with pytest.raises(DataError, match=rf"cannot download {re.escape(url)}: the host name does not resolve"):
        fetch(url, tmp_path / "0.tar", policy=RetryPolicy(backoff_s=5), sleep=sleeps.append)
    assert sleeps == []  # no retry, so no wait


@pytest.mark.parametrize(
    "cause",
    [socket.gaierror(socket.EAI_NONAME, "Name or service not known"), OSError(errno.ENETUNREACH, "unreachable")],
)
def test_an_unreachable_hub_fails_at_once_and_a_refused_connection_is_retried(
    cause: OSError, sleeps: list[float]
) -> None:
    def offline() -> None:
        raise ConnectionError("cannot connect") from cause

    with pytest.raises(DataError, match=r"cannot reach the Hugging Face Hub: .*is this machine offline\?"):
        retry_hub(offline, repo="o/n", url="hf://datasets/o/n/test/0.tar", policy=RetryPolicy(), sleep=sleeps.append)
    assert sleeps == []

    def refused() -> None:
        raise ConnectionError("cannot connect") from ConnectionRefusedError(errno.ECONNREFUSED, "refused")

    with pytest.raises(DataError, match=r"gave up after 6 attempts"):
        retry_hub(refused, repo="o/n", url="hf://datasets/o/n/test/0.tar", policy=RetryPolicy(), sleep=sleeps.append)
    assert sleeps == [1, 2, 4, 8, 16]


def test_an_offline_machine_gets_the_hub_answer_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    # The real hub client, on a machine whose resolver knows no hosts: the client alone would retry the listing
    # for about 20 s (1, 2, 4, 8, 8 s), then each download as long.
    from huggingface_hub import constants

    monkeypatch.setattr(download, "hub_route_problem", REAL_HUB_ROUTE_PROBLEM)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    resolved: list[str] = []

    def no_dns(host: str, *args: Any, **kwargs: Any) -> Any:
        resolved.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    started = time.monotonic()
    with pytest.raises(DataError) as caught:
        resolve_shards("hf://datasets/owner/name", split="test", cache_dir=tmp_path, benchmark="bench")
    assert time.monotonic() - started < 3
    first, *hint = str(caught.value).splitlines()
    assert first == (
        "cannot download https://huggingface.co/datasets/owner/name: cannot reach the Hugging Face Hub: the host "
        "name does not resolve (Name or service not known); is this machine offline?"
    )
    assert "hf download owner/name" in hint[-1]
    assert resolved == [urllib.parse.urlsplit(constants.ENDPOINT).hostname]  # asked once, not retried


def test_server_errors_are_retried(server: Any, tmp_path: Path, sleeps: list[float]) -> None:
    plan = server.plans["/0.tar"] = Plan(faults=["503", "503"])
    _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps)
    assert (tmp_path / "0.tar").read_bytes() == BODY
    assert len(plan.seen) == 3


# --- refusals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "words"), [(401, "requires authentication"), (403, "refused access")])
def test_refusal_says_how_to_authenticate_and_is_not_retried(
    server: Any, tmp_path: Path, sleeps: list[float], status: int, words: str
) -> None:
    plan = server.plans["/0.tar"] = Plan(status=status)
    with pytest.raises(DataError) as caught:
        _fetch(server, "/0.tar", tmp_path / "0.tar", sleeps)
    assert str(caught.value) == (
        f"cannot download {server.url}/0.tar: the server {words} (HTTP {status}); the dataset may be gated or "
        "private: put credentials for it in ~/.netrc (or the file $NETRC names) as `machine 127.0.0.1 login USER "
        "password TOKEN`, or download the shards yourself"
    )
    assert len(plan.seen) == 1
    assert sleeps == []
    assert _files(tmp_path) == []


def test_netrc_credentials_are_sent(
    server: Any, tmp_path: Path, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login ada password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    expected = "Basic " + base64.b64encode(b"ada:s3cret").decode()
    plan = server.plans["/0.tar"] = Plan(auth=expected)
    fetch(f"{server.url}/0.tar", tmp_path / "out" / "0.tar", policy=RetryPolicy(timeout_s=TIMEOUT_S))
    assert (tmp_path / "out" / "0.tar").read_bytes() == BODY
    assert [s["auth"] for s in plan.seen] == [expected]


def test_404_names_the_url(server: Any, tmp_path: Path, sleeps: list[float]) -> None:
    with pytest.raises(DataError) as caught:
        _fetch(server, "/test/7.tar", tmp_path / "7.tar", sleeps)
    assert str(caught.value) == (
        f"cannot download {server.url}/test/7.tar: not found (HTTP 404); check the URL, the split and the shard count"
    )
    assert sleeps == []


def test_resolve_shards_adds_where_to_put_shards(server: Any, tmp_path: Path) -> None:
    server.plans["/test/0.tar"] = Plan(status=403)
    with pytest.raises(DataError) as caught:
        resolve_shards(f"{server.url}/test/{{0..1}}.tar", split="test", cache_dir=tmp_path, benchmark="bench")
    message = str(caught.value)
    assert message.startswith(f"cannot download {server.url}/test/0.tar: the server refused access (HTTP 403)")
    assert "$MILL_DATA_DIR/bench/test/*.tar" in message


# --- a full disk -----------------------------------------------------------------------------------------


def test_a_full_disk_deletes_the_partial_file_and_says_how_much_is_needed(
    server: Any, tmp_path: Path, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.plans["/0.tar"] = Plan()
    real_write = os.write
    room = 40_000

    def write(fd: int, data: Any) -> int:
        # Only the download's partial file fills up; pytest's own output is untouched.
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith(".part"):
            written = os.fstat(fd).st_size
            if written >= room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            data = bytes(data)[: room - written]
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(DataError) as caught:
        _fetch(server, "/0.tar", tmp_path / "cache" / "0.tar", sleeps)
    message = str(caught.value)
    assert re.fullmatch(
        rf"no space left on the device writing {re.escape(str(tmp_path / 'cache'))}/\.0\.tar\.[0-9a-f]+\.part "
        rf"\(downloading 0\.tar\): the file is {len(BODY)} bytes, {room} were written: free at least "
        rf"{len(BODY) - room} bytes there, or point \$MILL_CACHE_DIR \(--cache_dir\) at a larger filesystem; "
        "the partial file was deleted",
        message,
    ), message
    assert sleeps == []  # a full disk is not retried
    assert _files(tmp_path / "cache") == []


# --- the Hugging Face Hub --------------------------------------------------------------------------------


def _hub_error(cls: type[Exception], status: int) -> Exception:
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return cls("hub says no", response=response)


def _hub_raising(monkeypatch: pytest.MonkeyPatch, root: Path, errors: list[BaseException]) -> list[str]:
    """The hub lists ``root``'s tars; each download raises the next of ``errors``, then copies the file."""
    calls: list[str] = []

    class Api:
        def list_repo_files(self, repo_id: str, *, repo_type: str) -> list[str]:
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.tar"))

    def download(repo_id: str, filename: str, *, repo_type: str, local_dir: str) -> str:
        calls.append(filename)
        if errors:
            partial = Path(local_dir, ".cache", "huggingface", "download", "test", "abc.incomplete")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(b"half")
            raise errors.pop(0)
        target = Path(local_dir, filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((root / filename).read_bytes())
        return str(target)

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


URL = "https://huggingface.co/datasets/owner/name/resolve/main/test/0.tar"
LOGIN = "run `hf auth login` (or set HF_TOKEN)"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _hub_error(hub_errors.GatedRepoError, 403),
            f"cannot download {URL}: the server refused access (HTTP 403); the dataset may be gated or private: accept"
            f" its terms at https://huggingface.co/datasets/owner/name while logged in, then {LOGIN} on this machine",
        ),
        (
            _hub_error(hub_errors.RepositoryNotFoundError, 404),
            f"cannot download {URL}: dataset owner/name is not on the Hugging Face Hub (HTTP 404), or it is private:"
            f" check the name, or {LOGIN} with an account that can read it",
        ),
        (
            hub_errors.EntryNotFoundError("no such file"),
            f"cannot download {URL}: not found (HTTP 404); check the URL, the split and the shard count",
        ),
        (_hub_error(hub_errors.HfHubHTTPError, 401), refusal_message(URL, 401, hub_repo="owner/name")),
    ],
    ids=["gated", "repo-not-found", "entry-not-found", "http-401"],
)
def test_hub_errors_read_like_http_ones(
    wds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, expected: str
) -> None:
    calls = _hub_raising(monkeypatch, wds_dir, [error])
    with pytest.raises(DataError) as caught:
        resolve_shards("hf://datasets/owner/name", split="test", cache_dir=tmp_path, benchmark="bench")
    first, *hint = str(caught.value).splitlines()
    assert first == expected
    assert "hf download owner/name" in hint[-1]
    assert calls == ["test/0.tar"]  # not retried
    # The hub's partial file stays for the next run to resume.
    assert list(tmp_path.rglob("*.incomplete"))


def test_hub_timeouts_and_5xx_are_retried_like_http(
    wds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = [
        TimeoutError("read timed out"),
        _hub_error(hub_errors.HfHubHTTPError, 502),
    ]
    calls = _hub_raising(monkeypatch, wds_dir, errors)
    shards = resolve_shards("hf://datasets/owner/name", split="test", cache_dir=tmp_path)
    assert [s.name for s in shards] == ["test/0.tar", "test/1.tar", "test/2.tar"]
    assert calls == ["test/0.tar"] * 3 + ["test/1.tar", "test/2.tar"]


def _hub_failure(monkeypatch: pytest.MonkeyPatch, root: Path, cache: Path, errors: list[BaseException]) -> Any:
    """The first line of the error resolving an hf:// source whose downloads raise ``errors``, and the calls."""
    calls = _hub_raising(monkeypatch, root, errors)
    with pytest.raises(DataError) as caught:
        resolve_shards("hf://datasets/owner/name", split="test", cache_dir=cache)
    return str(caught.value).splitlines()[0], calls


def test_hub_timeouts_give_up_after_five_retries(
    wds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, calls = _hub_failure(monkeypatch, wds_dir, tmp_path, [TimeoutError("read timed out")] * 6)
    assert first == (
        f"cannot download {URL}: no data from the Hugging Face Hub in time ($HF_HUB_DOWNLOAD_TIMEOUT sets how long"
        " to wait) (gave up after 6 attempts)"
    )
    assert len(calls) == 6


def test_hub_full_disk_deletes_the_partial_file(wds_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.incomplete"))
    first, calls = _hub_failure(monkeypatch, wds_dir, tmp_path, [full])
    assert first == (
        f"no space left on the device downloading {URL}: {tmp_path / 'x.incomplete'} could not be written; free "
        "some space there, or point $MILL_CACHE_DIR (--cache_dir) at a larger filesystem; the partial file was "
        "deleted"
    )
    assert calls == ["test/0.tar"]
    assert not list(tmp_path.rglob("*.incomplete"))
