"""Limits over real HTTP on every profile: body size, header size, slow clients, concurrency.

All tests share one server per profile (conftest `limited`): one worker, APP_MAX_BODY_SIZE=1024,
APP_MAX_CONCURRENCY=4. Observations are printed (-s) and written to resilience.json.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devkit.process import ServerProcess
from tests.resilience.conftest import (
    HEAD_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    MAX_BODY_SIZE,
    MAX_CONCURRENCY,
    NO_HEAD_TIMEOUT,
)
from tests.resilience.support import (
    Report,
    connect,
    open_sockets,
    raw_exchange,
    read_response_head,
    summarize_ms,
)

pytestmark = pytest.mark.resilience

NO_HANG = 5.0  # seconds: a response or a close must come within this


def request_head(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_still_serving(server: ServerProcess) -> None:
    assert server.process.poll() is None, server.log()[-3000:]
    assert httpx.get(server.base_url + "/", timeout=10).status_code == 200


# --- body size --------------------------------------------------------------------------


def test_declared_body_over_limit_is_413_without_waiting_for_the_body(limited: ServerProcess) -> None:
    head = request_head(
        "POST", "/consume", [("Content-Type", "application/octet-stream"), ("Content-Length", "10000000")]
    )
    result = raw_exchange(limited.port, head, timeout=NO_HANG)  # the 10 MB body is never sent
    assert result.status == 413, result.describe()
    within = httpx.post(limited.base_url + "/consume", content=b"a" * MAX_BODY_SIZE, timeout=10)
    assert within.status_code == 200
    assert within.json() == {"received": MAX_BODY_SIZE}
    over = httpx.post(limited.base_url + "/consume", content=b"a" * (MAX_BODY_SIZE + 1), timeout=10)
    assert over.status_code == 413
    assert "detail" in over.json()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_chunked_body_is_counted_as_it_streams(limited: ServerProcess) -> None:
    head = request_head(
        "POST", "/consume", [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]
    )
    # Within the limit, complete: read to the end.
    with connect(limited.port) as sock:
        sock.sendall(head + b"".join(_chunk(b"x" * 256) for _ in range(4)) + b"0\r\n\r\n")
        ok = read_response_head(sock, NO_HANG)
    assert ok.status == 200, ok.describe()
    # Over the limit and never finished: the 413 must come while the body is still streaming.
    with connect(limited.port) as sock:
        sock.sendall(head)
        for _ in range(6):  # 1536 bytes > 1024, no terminating chunk
            sock.sendall(_chunk(b"y" * 256))
            time.sleep(0.05)
        over = read_response_head(sock, NO_HANG)
    assert over.status == 413, over.describe()
    assert_still_serving(limited)


# --- oversized headers ----------------------------------------------------------------


HEADER_CASES = {
    "one_64KiB_header": [("X-Big", "a" * 65536)],
    "200_headers": [(f"X-H{i}", "v" * 16) for i in range(200)],
}


# httptools (uvicorn, gunicorn's uvicorn-worker) and granian have no header size limit of
# their own; the app's LimitsMiddleware answers 431 beyond APP_MAX_HEADER_BYTES /
# APP_MAX_HEADER_COUNT on every profile, and hypercorn / gunicorn's ASGI worker may refuse
# earlier with their own 431.


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_oversized_headers_get_4xx_or_close_never_5xx_or_hang(
    limited: ServerProcess, case: str, report: Report
) -> None:
    result = raw_exchange(limited.port, request_head("GET", "/", HEADER_CASES[case]), timeout=NO_HANG)
    report.add(
        f"oversized_headers[{limited.profile}][{case}]",
        outcome=result.describe(),
        seconds=round(result.elapsed, 3),
    )
    assert not result.timed_out, "no answer and no close: the connection hangs"
    assert result.status is None or result.status < 500, result.describe()
    assert_still_serving(limited)
    # Both exceed the defaults (32 KiB in total, 100 fields): refused on every profile.
    assert result.status is None or 400 <= result.status < 500, f"accepted: {result.describe()}"


# --- slow clients ---------------------------------------------------------------------

IDLE_CONNECTIONS = 200
TRICKLERS = 5
# Well past HEAD_TIMEOUT (3 s) but short of KEEPALIVE_TIMEOUT (10 s): a server that cut idle
# connections at its keep-alive timeout only would fail.
OBSERVE_SECONDS = HEAD_TIMEOUT + 3
assert OBSERVE_SECONDS < KEEPALIVE_TIMEOUT


def _trickle(port: int, stop: threading.Event, closed_after: list[float]) -> None:
    """Send a request one byte per 0.2 s and never finish it; note when the server closes."""
    payload = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 10_000
    started = time.monotonic()
    with contextlib.suppress(OSError), connect(port) as sock:
        for byte in payload:
            if stop.is_set():
                return
            sock.sendall(bytes([byte]))
            if stop.wait(0.2):
                return
            sock.setblocking(False)
            try:
                if sock.recv(4096) == b"":
                    closed_after.append(time.monotonic() - started)
                    return
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
    if not stop.is_set():
        closed_after.append(time.monotonic() - started)  # send failed: the server closed it


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slow_and_idle_clients_do_not_starve_normal_requests(
    limited: ServerProcess, report: Report, request: pytest.FixtureRequest
) -> None:
    if limited.profile in NO_HEAD_TIMEOUT:
        request.applymarker(pytest.mark.xfail(strict=True, reason=NO_HEAD_TIMEOUT[limited.profile]))
    stop = threading.Event()
    trickle_closed: list[float] = []
    tricklers = [
        threading.Thread(target=_trickle, args=(limited.port, stop, trickle_closed), daemon=True)
        for _ in range(TRICKLERS)
    ]
    latencies: list[float] = []
    statuses: list[int | str] = []
    idle_closed_at: dict[int, float] = {}
    with open_sockets(limited.port, IDLE_CONNECTIONS) as idle:
        opened = time.monotonic()
        for thread in tricklers:
            thread.start()
        try:
            # 30 normal requests, each on a fresh connection, while the slow ones hold theirs.
            for _ in range(30):
                start = time.monotonic()
                try:
                    statuses.append(httpx.get(limited.base_url + "/", timeout=10).status_code)
                except httpx.HTTPError as error:
                    statuses.append(type(error).__name__)
                latencies.append(time.monotonic() - start)
                time.sleep(0.05)
            # Then watch which idle connections the server closes, bounded in time.
            while time.monotonic() - opened < OBSERVE_SECONDS and len(idle_closed_at) < IDLE_CONNECTIONS:
                for index, sock in enumerate(idle):
                    if index not in idle_closed_at and _closed(sock):
                        idle_closed_at[index] = time.monotonic() - opened
                time.sleep(0.25)
        finally:
            stop.set()
            for thread in tricklers:
                thread.join(timeout=5)
    closed_times = sorted(idle_closed_at.values())
    figures = summarize_ms(latencies)
    report.add(
        f"slow_clients[{limited.profile}]",
        normal_requests=len(statuses),
        normal_ok=sum(1 for s in statuses if s == 200),
        normal_latency=figures,
        idle_open=IDLE_CONNECTIONS,
        idle_closed_within_s=OBSERVE_SECONDS,
        idle_closed=len(closed_times),
        idle_first_closed_s=round(closed_times[0], 2) if closed_times else None,
        trickle_closed=len(trickle_closed),
        trickle_closed_after_s=[round(t, 2) for t in sorted(trickle_closed)],
    )
    assert statuses == [200] * len(statuses), statuses
    assert max(latencies) < NO_HANG, latencies  # safety bound only; the figures are the measurement
    # APP_REQUEST_HEAD_TIMEOUT: silent and trickling connections are cut, on every profile.
    assert len(closed_times) == IDLE_CONNECTIONS, f"{IDLE_CONNECTIONS - len(closed_times)} idle left open"
    assert len(trickle_closed) == TRICKLERS, f"{TRICKLERS - len(trickle_closed)} tricklers left open"
    assert_still_serving(limited)


# --- concurrency ----------------------------------------------------------------------


def test_request_beyond_max_concurrency_gets_quick_503_with_retry_after(
    limited: ServerProcess, report: Report
) -> None:
    slow_seconds = 3.0

    def slow() -> tuple[int, float]:
        response = httpx.get(limited.base_url + "/slow", params={"seconds": slow_seconds}, timeout=30)
        return response.status_code, time.monotonic()

    with ThreadPoolExecutor(MAX_CONCURRENCY) as pool:
        in_flight = [pool.submit(slow) for _ in range(MAX_CONCURRENCY)]
        time.sleep(1.0)  # all of them are inside the handler now
        start = time.monotonic()
        extra = httpx.get(limited.base_url + "/pid", timeout=30)
        answered = time.monotonic()
        probe = httpx.get(limited.base_url + "/healthz", timeout=30)
        slow_done = [f.result(timeout=30) for f in in_flight]
    after = httpx.get(limited.base_url + "/pid", timeout=30)
    report.add(
        f"max_concurrency[{limited.profile}]",
        extra_status=extra.status_code,
        extra_ms=round((answered - start) * 1000, 1),
        retry_after=extra.headers.get("retry-after"),
        healthz_while_saturated=probe.status_code,
    )
    assert [status for status, _ in slow_done] == [200] * MAX_CONCURRENCY
    assert extra.status_code == 503
    assert extra.headers.get("retry-after") == "1"
    assert json.loads(extra.content)["detail"]
    # Quick: answered while every slow request was still running, not queued behind them.
    assert answered < min(done for _, done in slow_done)
    assert probe.status_code == 200  # probes are exempt
    assert after.status_code == 200
