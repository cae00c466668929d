"""Fetching one remote file into the cache over a network that may stall, drop or refuse.

A download goes to a ``.part`` file beside its target and is renamed into place only when every byte has
arrived, so a file at its final path is always whole. A server that stops sending for ``MILL_HTTP_TIMEOUT``
seconds (default 30), drops the connection, or answers 5xx/429 is retried 5 times, waiting 1, 2, 4, 8 and
16 s (``MILL_HTTP_BACKOFF`` scales the first wait); each retry asks only for the missing bytes with an HTTP
Range request and starts over when the server ignores it (200 instead of 206). A host that does not resolve or
cannot be routed to (an offline machine) fails at once: no retry would cure it. A server that keeps sending, but
too slowly to ever finish (under ``MILL_HTTP_MIN_RATE`` bytes/s, default 1024, over the last
``MILL_HTTP_RATE_WINDOW`` seconds, default 60), is treated as a stall. A refusal (401/403), a
missing file (404) or a full disk is not retried: it raises a :class:`DataError` saying what to do, and the
partial file is deleted.

The same retry rule and the same messages apply to the Hugging Face Hub client's errors
(:func:`retry_hub`), so an ``hf://`` source fails the way an http one does. Since the hub client retries a
failed connection on its own, whether the Hub can be reached at all is asked before it is called
(:func:`mill.core.hub.hub_route_problem`).
"""

from __future__ import annotations

import errno
import http.client
import logging
import netrc
import os
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from attrs import frozen

from mill.core.errors import DataError
from mill.core.hub import hub_route_problem
from mill.core.network import unreachable_reason

log = logging.getLogger(__name__)

#: Seconds without a byte from the server before an attempt is abandoned.
TIMEOUT_ENV = "MILL_HTTP_TIMEOUT"
#: Seconds before the first retry; each further retry waits twice as long.
BACKOFF_ENV = "MILL_HTTP_BACKOFF"
#: Bytes per second a transfer must average over the rate window (0: no limit).
MIN_RATE_ENV = "MILL_HTTP_MIN_RATE"
#: Seconds over which the transfer rate is measured.
RATE_WINDOW_ENV = "MILL_HTTP_RATE_WINDOW"
CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_BACKOFF_S = 1.0
DEFAULT_MIN_RATE = 1024.0
DEFAULT_RATE_WINDOW_S = 60.0

T = TypeVar("T")


@frozen
class RetryPolicy:
    """How long to wait for a server and how often to try again.

    With the defaults, a download is tried once and retried 5 times, after 1, 2, 4, 8 and 16 s.
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = 5
    backoff_s: float = DEFAULT_BACKOFF_S
    #: A transfer averaging fewer bytes per second than this over ``rate_window_s`` is abandoned (0: never):
    #: the timeout alone lets a server that sends a byte every few seconds hold a download for ever.
    min_rate: float = DEFAULT_MIN_RATE
    rate_window_s: float = DEFAULT_RATE_WINDOW_S

    def delays(self) -> tuple[float, ...]:
        """The wait before each retry, in order (pure)."""
        return tuple(self.backoff_s * 2**i for i in range(self.retries))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RetryPolicy:
        """The defaults, overridden by ``MILL_HTTP_TIMEOUT``, ``MILL_HTTP_BACKOFF``, ``MILL_HTTP_RATE_WINDOW``
        (seconds) and ``MILL_HTTP_MIN_RATE`` (bytes per second).

        Raises:
            DataError: a variable is set to something other than a positive number (zero for the backoff
                and the rate).
        """
        return cls(
            timeout_s=_seconds(env, TIMEOUT_ENV, DEFAULT_TIMEOUT_S, allow_zero=False),
            backoff_s=_seconds(env, BACKOFF_ENV, DEFAULT_BACKOFF_S, allow_zero=True),
            min_rate=_seconds(env, MIN_RATE_ENV, DEFAULT_MIN_RATE, allow_zero=True, unit="bytes per second"),
            rate_window_s=_seconds(env, RATE_WINDOW_ENV, DEFAULT_RATE_WINDOW_S, allow_zero=False),
        )


def _seconds(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool, unit: str = "seconds") -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise DataError(f"${name} is {text!r}: set it to a number of {unit} (default {default:g}), or unset it")
    return value


class Transient(Exception):
    """One attempt failed in a way another attempt may not (a stall, a dropped connection, a 5xx)."""


# --- messages shared by http(s) and the Hub -------------------------------------------------------------


def refusal_message(url: str, status: int, *, hub_repo: str | None = None) -> str:
    """What to say when a server answers ``status`` for ``url`` and retrying will not help (pure)."""
    if status in (401, 403):
        what = "requires authentication" if status == 401 else "refused access"
        if hub_repo is not None:
            how = (
                f"the dataset may be gated or private: accept its terms at https://huggingface.co/datasets/{hub_repo}"
                " while logged in, then run `hf auth login` (or set HF_TOKEN) on this machine"
            )
        else:
            host = urllib.parse.urlsplit(url).hostname or "the host"
            how = (
                "the dataset may be gated or private: put credentials for it in ~/.netrc (or the file $NETRC names)"
                f" as `machine {host} login USER password TOKEN`, or download the shards yourself"
            )
        return f"cannot download {url}: the server {what} (HTTP {status}); {how}"
    if status == 404:
        return f"cannot download {url}: not found (HTTP 404); check the URL, the split and the shard count"
    return f"cannot download {url}: the server answered HTTP {status}"


def timeout_message(policy: RetryPolicy, progress: str = "") -> str:
    return f"no data from the server for {policy.timeout_s:g} s{progress} (${TIMEOUT_ENV} sets how long to wait)"


def retrying(attempt: Callable[[], T], *, what: str, policy: RetryPolicy, sleep: Callable[[float], None]) -> T:
    """``attempt()``, called again after each :class:`Transient` failure as ``policy`` says.

    Raises:
        DataError: every attempt failed; the message names ``what`` and the last failure.
    """
    delays = policy.delays()
    for number in range(len(delays) + 1):
        try:
            return attempt()
        except Transient as failure:
            if number == len(delays):
                raise DataError(f"cannot download {what}: {failure} (gave up after {number + 1} attempts)") from None
            log.warning("downloading %s: %s; retrying in %g s", what, failure, delays[number])
            sleep(delays[number])
    raise AssertionError("unreachable")


# --- http(s) --------------------------------------------------------------------------------------------


class _Part:
    """The partial file of one download: created beside the target, appended to, truncated on restart."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        self.written = 0
        self.total: int | None = None
        self.validator: str | None = None  # etag:ETag or last-modified:DATE, for If-Range
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # 0o666: the user's umask decides who may read the cache, as for any file they create.
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as error:
            raise self._disk_error(error) from None

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            while view:
                done = os.write(self.fd, view)
                view = view[done:]
                self.written += done
        except OSError as error:
            raise self._disk_error(error) from None

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.written = 0
        self.total = None
        self.validator = None

    def commit(self) -> None:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.path, self.target)
        except OSError as error:
            raise self._disk_error(error) from None

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.path.unlink(missing_ok=True)

    def _disk_error(self, error: OSError) -> DataError:
        where = self.path if self.path.parent.is_dir() else self.target.parent
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            need = (
                f"the file is {self.total} bytes, {self.written} were written: free at least "
                f"{self.total - self.written} bytes there"
                if self.total is not None
                else "free some space there"
            )
            return DataError(
                f"no space left on the device writing {where} (downloading {self.target.name}): {need}, "
                "or point $MILL_CACHE_DIR (--cache_dir) at a larger filesystem; the partial file was deleted"
            )
        return DataError(f"cannot write {where}: {error.strerror or error}; check the cache folder's permissions")


def fetch(
    url: str,
    target: Path,
    *,
    policy: RetryPolicy | None = None,
    env: Mapping[str, str] = os.environ,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Download ``url`` to ``target`` (replacing it), resuming across retries where the server allows; returns
    what the server calls this version of the file (its ETag, else its Last-Modified date), or None.

    ``policy`` defaults to :meth:`RetryPolicy.from_env`; ``sleep`` is how retries wait (tests pass a
    recorder). Credentials for the host are taken from ``$NETRC`` or ``~/.netrc`` when present.

    Raises:
        DataError: the server refused (401/403: how to authenticate), has no such file (404: the URL),
            kept failing after every retry (the last failure), or the disk is full (the path and the bytes
            needed); nothing is left at ``target`` or beside it.
    """
    policy = policy or RetryPolicy.from_env(env)
    auth = _authorization(url, env)
    part = _Part(target)
    try:
        retrying(lambda: _attempt(url, part, policy, auth), what=url, policy=policy, sleep=sleep)
        part.commit()
    finally:
        part.discard()
    return part.validator


def remote_version(url: str, *, policy: RetryPolicy, env: Mapping[str, str] = os.environ) -> str | None:
    """What the server calls the current version of ``url`` (ETag, else Last-Modified; None when it sends
    neither), asked once with a HEAD request and not retried: it only decides whether a cached copy is current.

    Raises:
        DataError: the server cannot be reached, refuses, or does not answer within the policy's timeout.
    """
    request = urllib.request.Request(url, method="HEAD")
    if auth := _authorization(url, env):
        request.add_unredirected_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=policy.timeout_s) as response:
            return _validator(response.headers)
    except urllib.error.HTTPError as error:
        error.close()
        raise DataError(refusal_message(url, error.code)) from None
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise DataError(f"cannot reach {url}: {unreachable_reason(error) or _network_reason(error, policy)}") from None


def _validator(headers: Any) -> str | None:
    etag = headers.get("ETag")
    modified = headers.get("Last-Modified")
    return f"etag:{etag}" if etag else f"last-modified:{modified}" if modified else None


def _attempt(url: str, part: _Part, policy: RetryPolicy, auth: str | None) -> None:
    request = urllib.request.Request(url)
    if part.written:
        request.add_header("Range", f"bytes={part.written}-")
        if part.validator:
            request.add_header("If-Range", part.validator.split(":", 1)[1])
    if auth:
        # Unredirected: a redirect to another host must not carry the credentials along.
        request.add_unredirected_header("Authorization", auth)
    try:
        response = urllib.request.urlopen(request, timeout=policy.timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416:  # the range we asked for is gone (the file changed): start over
            part.restart()
            raise Transient("the server cannot resume the download (HTTP 416)") from None
        if error.code in (408, 429) or error.code >= 500:
            raise Transient(f"the server answered HTTP {error.code} {error.reason}") from None
        raise DataError(refusal_message(url, error.code)) from None
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as error:
        if unreachable := unreachable_reason(error):
            raise DataError(f"cannot download {url}: {unreachable}") from None
        raise Transient(_network_reason(error, policy)) from None
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != part.written:
                part.restart()
                raise Transient(f"the server resumed at byte {start}, not {part.written}")
            part.total = total
        else:
            if part.written:
                log.info("%s: the server ignored the Range request; downloading from the start", url)
                part.restart()
            part.total = response.length
        part.validator = _validator(response.headers)
        rate = _Rate(policy)
        try:
            while chunk := response.read1(CHUNK_BYTES):  # what has arrived: a stall keeps it
                part.write(chunk)
                if too_slow := rate.too_slow(len(chunk)):
                    raise Transient(too_slow + _progress(part))
        except (TimeoutError, http.client.HTTPException, OSError) as error:
            raise Transient(_network_reason(error, policy, part)) from None
    # http.client ends a sized read quietly when the server closes early: never keep a short file.
    if part.total is not None and part.written < part.total:
        raise Transient(f"the server closed the connection after {part.written} of {part.total} bytes")


class _Rate:
    """The bytes one attempt received over the last ``policy.rate_window_s`` seconds."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._start = clock()
        self._recent: deque[tuple[float, int]] = deque()
        self._in_window = 0

    def too_slow(self, n_bytes: int) -> str | None:
        """Count ``n_bytes`` just received; say why the attempt is too slow once a whole window averaged
        under the policy's rate (None while it is fast enough, or has not run a whole window yet)."""
        now, window = self._clock(), self._policy.rate_window_s
        self._recent.append((now, n_bytes))
        self._in_window += n_bytes
        while self._recent[0][0] < now - window:
            self._in_window -= self._recent.popleft()[1]
        if (
            self._policy.min_rate <= 0
            or now - self._start < window
            or self._in_window >= self._policy.min_rate * window
        ):
            return None
        return (
            f"the server sent {self._in_window} bytes in the last {window:g} s, under {self._policy.min_rate:g} "
            f"bytes/s (${MIN_RATE_ENV} and ${RATE_WINDOW_ENV} set the limit)"
        )


def _progress(part: _Part | None) -> str:
    return f" after {part.written} of {part.total} bytes" if part is not None and part.total is not None else ""


def _network_reason(error: BaseException, policy: RetryPolicy, part: _Part | None = None) -> str:
    reason: object = error.reason if isinstance(error, urllib.error.URLError) else error
    progress = _progress(part)
    if isinstance(reason, TimeoutError):
        return timeout_message(policy, progress)
    if isinstance(error, http.client.IncompleteRead) or isinstance(reason, ConnectionError):
        return f"the server closed the connection{progress}"
    return f"{str(reason) or type(reason).__name__}{progress}"


def _content_range(value: str) -> tuple[int, int | None]:
    """``bytes 100-199/200`` → (100, 200); an unknown total (``*``) → None (pure)."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value)
    if not match:
        return -1, None
    return int(match[1]), (None if match[2] == "*" else int(match[2]))


def _authorization(url: str, env: Mapping[str, str]) -> str | None:
    """A Basic ``Authorization`` header for ``url``'s host from ``$NETRC`` or ``~/.netrc``, if one is listed.

    Raises:
        DataError: the netrc file exists but cannot be parsed.
    """
    host = urllib.parse.urlsplit(url).hostname
    path = Path(env["NETRC"]) if env.get("NETRC") else Path(env.get("HOME", str(Path.home()))) / ".netrc"
    if not host or not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as error:
        raise DataError(f"cannot read credentials from {path}: {error}") from None
    if entry is None:
        return None
    login, _, password = entry
    return "Basic " + b64encode(f"{login}:{password or ''}".encode()).decode()


# --- Hugging Face Hub -----------------------------------------------------------------------------------


def retry_hub(
    call: Callable[[], T],
    *,
    repo: str,
    url: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    cleanup: Callable[[], None] = lambda: None,
) -> T:
    """``call()`` (a huggingface_hub request about ``url``), retried on timeouts, dropped connections and
    5xx answers like an http download, its other errors turned into the http messages.

    ``cleanup`` runs when the disk fills up (it deletes the partial file); other failures leave the hub's
    partial file for the next run to resume.

    Raises:
        DataError: the Hub cannot be reached from this machine (at once, without calling), gated or private
            (how to log in), not found (the URL), the disk is full, or every attempt failed.
    """
    policy = policy or RetryPolicy.from_env()
    # The hub client retries a failed connection for about 20 s before it answers: ask first whether the Hub
    # can be reached at all, so an offline machine gets its answer at once.
    if problem := hub_route_problem():
        raise DataError(f"cannot download {url}: cannot reach the Hugging Face Hub: {problem}")

    def attempt() -> T:
        try:
            return call()
        except Exception as error:  # the hub's errors come from several libraries: classify them all
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                cleanup()
            raise _hub_failure(error, repo=repo, url=url) from None

    return retrying(attempt, what=url, policy=policy, sleep=sleep)


def _hub_failure(error: Exception, *, repo: str, url: str) -> Exception:
    """The :class:`DataError` (final) or :class:`Transient` (retry) that a hub client error stands for."""
    # huggingface_hub.utils holds these in every supported version (>=0.23), though mypy sees no re-export.
    import huggingface_hub.utils

    hub: Any = huggingface_hub.utils

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(
            f"no space left on the device downloading {url}: {error.filename or 'the cache folder'} could not "
            "be written; free some space there, or point $MILL_CACHE_DIR (--cache_dir) at a larger filesystem;"
            " the partial file was deleted"
        )
    if type(error).__name__ == "OfflineModeIsEnabled":
        return DataError(f"cannot download {url}: HF_HUB_OFFLINE is set and the file is not in the cache")
    if isinstance(error, hub.GatedRepoError):
        return DataError(refusal_message(url, 403, hub_repo=repo))
    if isinstance(error, hub.RepositoryNotFoundError):
        # The hub answers "not found" for private datasets too, when no token is given.
        return DataError(
            f"cannot download {url}: dataset {repo} is not on the Hugging Face Hub (HTTP 404), or it is private:"
            " check the name, or run `hf auth login` (or set HF_TOKEN) with an account that can read it"
        )
    if isinstance(error, hub.LocalEntryNotFoundError):
        return DataError(
            f"cannot download {url}: the Hub is unreachable or offline mode is on (HF_HUB_OFFLINE) and the file is"
            " not in the cache"
        )
    if isinstance(error, hub.EntryNotFoundError | hub.RevisionNotFoundError):
        return DataError(refusal_message(url, 404))
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, hub.HfHubHTTPError) and isinstance(status, int):
        if status in (408, 429) or status >= 500:
            return Transient(f"the server answered HTTP {status}")
        return DataError(refusal_message(url, status, hub_repo=repo))
    if _is_timeout(error):
        # The hub client keeps its own timeout, read when it is imported.
        return Transient("no data from the Hugging Face Hub in time ($HF_HUB_DOWNLOAD_TIMEOUT sets how long to wait)")
    if unreachable := unreachable_reason(error):
        return DataError(f"cannot download {url}: cannot reach the Hugging Face Hub: {unreachable}")
    if isinstance(error, ConnectionError) or "connect" in type(error).__name__.lower():
        return Transient(f"cannot reach the Hugging Face Hub ({error})")
    return DataError(f"cannot download {url}: {error}")


def _is_timeout(error: BaseException | None) -> bool:
    """Whether ``error`` or what caused it is a timeout, whichever HTTP library raised it (pure)."""
    while error is not None:
        if isinstance(error, TimeoutError) or "timeout" in type(error).__name__.lower():
            return True
        error = error.__cause__ or error.__context__
    return False


__all__ = [
    "BACKOFF_ENV",
    "MIN_RATE_ENV",
    "RATE_WINDOW_ENV",
    "TIMEOUT_ENV",
    "RetryPolicy",
    "fetch",
    "hub_route_problem",
    "refusal_message",
    "remote_version",
    "retry_hub",
    "retrying",
]
