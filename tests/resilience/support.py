"""Load generators, raw-socket HTTP and result reporting for the resilience suite.

Every loop here is bounded both in count and in time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devkit.process import LOOPBACK, ServerProcess

RESILIENCE_APP = "tests.resilience.apps:app"
WORKERS = 2
# Two workers serving the resilience app, no access lines: what the worker tests start from.
TWO_WORKERS_ENV = {"APP_ASGI_APP": RESILIENCE_APP, "APP_WORKERS": str(WORKERS), "APP_ACCESS_LOG": "false"}


# --- keep-alive load -------------------------------------------------------------------


@dataclass
class Outcome:
    started: float
    ended: float
    client: int
    status: int | None = None
    pid: int | None = None
    error: str | None = None
    first_error: str | None = None  # set when a retry followed: what the first attempt saw
    # When the client began writing the request, and when it had written it whole (None: it did
    # not). `started` is taken before the client thread asks for it; under load the thread may wait
    # for the GIL for tens of milliseconds before the bytes go out, so `started` says little about
    # when the server got it.
    writing: float | None = None
    sent: float | None = None

    @property
    def sent_by(self) -> float | None:
        """When the request was on its way: written whole, or else when its write began."""
        return self.sent if self.sent is not None else self.writing

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 500


@dataclass
class Load:
    """`clients` threads, each one keep-alive httpx client, requesting `path` in a loop.

    Stops after `max_requests` requests in total or `max_seconds`, whichever comes first,
    or when `stop()` is called. A failed request (exception or 5xx) is recorded and the
    client carries on with the next one.

    `retry_stale`: retry a GET once, on a new connection, when the connection broke before
    any response (reset / closed without response). RFC 9110 9.2.2 allows this for idempotent
    requests and browsers, urllib3 and most proxies do it: a keep-alive connection the server
    closes just as the client reuses it is an unavoidable race. Timeouts are never retried.
    """

    base_url: str
    clients: int = 4
    path: str = "/pid"
    max_requests: int = 10_000
    max_seconds: float = 10.0
    pause: float = 0.0
    timeout: float = 5.0
    retry_stale: bool = False
    verify: ssl.SSLContext | bool = True  # for HTTPS: the client context that trusts the server
    outcomes: list[Outcome] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _issued: int = 0

    def start(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for index in range(self.clients):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.outcomes

    def wait(self, timeout: float) -> list[Outcome]:
        for thread in self._threads:
            thread.join(timeout=max(0.0, timeout))
        return self.stop()

    def _take_ticket(self) -> bool:
        with self._lock:
            if self._issued >= self.max_requests:
                return False
            self._issued += 1
            return True

    def _run(self, index: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(
            base_url=self.base_url, limits=limits, timeout=self.timeout, verify=self.verify
        ) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline and self._take_ticket():
                outcome = Outcome(started=time.monotonic(), ended=0.0, client=index)
                self._attempt(client, outcome)
                if self.retry_stale and outcome.error and not outcome.error.startswith(_NOT_RETRIED):
                    outcome.first_error, outcome.error = outcome.error, None
                    self._attempt(client, outcome)
                outcome.ended = time.monotonic()
                with self._lock:
                    self.outcomes.append(outcome)
                if self.pause:
                    time.sleep(self.pause)

    def _attempt(self, client: httpx.Client, outcome: Outcome) -> None:
        def trace(event: str, info: dict[str, object]) -> None:  # httpx's `trace` request extension
            if event in _REQUEST_WRITING:
                outcome.writing = time.monotonic()
            elif event in _REQUEST_WRITTEN:
                outcome.sent = time.monotonic()

        try:
            response = client.get(self.path, extensions={"trace": trace})
            outcome.status = response.status_code
            with contextlib.suppress(ValueError, KeyError, TypeError):
                outcome.pid = int(response.json()["pid"])
        except httpx.HTTPError as error:
            outcome.error = f"{type(error).__name__}: {error}"

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


_NOT_RETRIED = ("ReadTimeout", "WriteTimeout", "PoolTimeout", "ConnectTimeout")
# httpcore's trace events as a request without a body begins to be written, and once it is written
# whole (HTTP/1.1, HTTP/2).
_REQUEST_WRITING = frozenset({"http11.send_request_headers.started", "http2.send_request_headers.started"})
_REQUEST_WRITTEN = frozenset({"http11.send_request_headers.complete", "http2.send_request_headers.complete"})


def retried(outcomes: list[Outcome]) -> dict[str, int]:
    """First-attempt errors that a retry on a new connection papered over."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.first_error:
            key = outcome.first_error.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
    return counts


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


def summarize_errors(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in failures(outcomes):
        key = outcome.error.split(":")[0] if outcome.error else f"HTTP {outcome.status}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def latency_ms(outcomes: list[Outcome]) -> dict[str, float]:
    return summarize_ms([o.ended - o.started for o in outcomes if o.ok])


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    values = sorted(s * 1000 for s in seconds)
    if not values:
        return {}
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p95_ms": round(values[min(len(values) - 1, int(len(values) * 0.95))], 2),
        "max_ms": round(values[-1], 2),
    }


def longest_gap(outcomes: list[Outcome], after: float) -> float:
    """Longest time without any successful response completing, from `after` on (seconds)."""
    ends = sorted(o.ended for o in outcomes if o.ok and o.ended >= after)
    points = [after, *ends]
    return max((b - a for a, b in itertools.pairwise(points)), default=float("inf"))


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Poll `predicate` until true; seconds it took, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def wait_workers(server: ServerProcess, count: int, timeout: float = 20.0) -> set[int]:
    pids: set[int] = set()

    def enough() -> bool:
        nonlocal pids
        pids = server.worker_pids()
        return len(pids) == count

    wait_for(enough, timeout, interval=0.1)
    return pids


# --- raw sockets -------------------------------------------------------------------------


@dataclass
class RawResult:
    """What came back on one raw connection."""

    status: int | None  # first response status, if any
    closed: bool  # the server closed the connection (EOF or reset)
    timed_out: bool  # neither a complete response head nor a close within the timeout
    elapsed: float
    head: bytes = b""

    def describe(self) -> str:
        if self.status is not None:
            return f"{self.status}{' +close' if self.closed else ''}"
        if self.closed:
            return "closed without response"
        return "timeout"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response_head(sock: socket.socket, timeout: float) -> RawResult:
    """Read until a response head is complete, the peer closes, or `timeout` passes."""
    start = time.monotonic()
    data = b""
    closed = False
    while b"\r\n\r\n" not in data:
        remaining = timeout - (time.monotonic() - start)
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:  # reset by peer
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    status = parse_status(data)
    timed_out = status is None and not closed
    if status is not None and not closed:
        closed = peer_closed_soon(sock, 0.0)
    return RawResult(status, closed, timed_out, time.monotonic() - start, data.split(b"\r\n\r\n")[0])


def parse_status(data: bytes) -> int | None:
    line = data.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def peer_closed_soon(sock: socket.socket, timeout: float) -> bool:
    """True if the peer has closed (EOF/reset) within `timeout`; drains any data meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.0, deadline - time.monotonic()) or 0.001)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError:
            return True
        if not chunk:
            return True
        if time.monotonic() >= deadline:
            return False


def raw_exchange(port: int, payload: bytes, timeout: float = 4.0) -> RawResult:
    with connect(port) as sock:
        # The server may refuse the rest of an oversized request and close early.
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        return read_response_head(sock, timeout)


# --- reporting ----------------------------------------------------------------------------


class Report:
    """Collects measured figures; prints one line per entry and writes them all to JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Any] = {}

    def add(self, key: str, **figures: Any) -> None:
        self.entries[key] = figures
        print(f"\n[resilience] {key}: {json.dumps(figures, default=str, sort_keys=True)}")
        self.path.write_text(json.dumps(self.entries, indent=2, default=str, sort_keys=True))


@contextlib.contextmanager
def open_sockets(port: int, count: int, timeout: float = 5.0) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(connect(port, timeout))
        yield sockets
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
