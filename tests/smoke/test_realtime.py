"""WebSockets (`/ws`) and server-sent events (`/events`) behave the same on every profile.

One server per profile (2 workers, JSON logs) is shared by every test here: each test
tells its own traffic apart by request id, or by metric deltas.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from deploy.profiles import PROFILES
from devkit.process import ServerProcess, running_server
from tests.support.access_lines import access_line

pytestmark = [pytest.mark.smoke, pytest.mark.demo_routes, pytest.mark.usefixtures("local_only")]

T = TypeVar("T")
WAIT_SECONDS = 10.0
# Known server limitations, each asserted as what it is so a fix upstream shows up here:
# granian sends no headers given in `websocket.accept` (the request id is in the access line only).
NO_ACCEPT_HEADERS = {"granian"}


@pytest.fixture(scope="module", params=sorted(PROFILES))
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    env = {"APP_WORKERS": "2", "APP_LOG_FORMAT": "json", "APP_WS_MAX_MESSAGE_BYTES": "65536"}
    with running_server(request.param, env) as running:
        yield running


def ws_url(server: ServerProcess, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def eventually(probe: Callable[[], T | None], what: str) -> T:
    """Poll `probe` until it returns something (bounded in time)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not seen within {WAIT_SECONDS:.0f}s: {what}")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def scrape(server: ServerProcess) -> str:
    return httpx.get(f"{server.base_url}/metrics").text


def read_events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    """The first `count` events of a stream (comment lines skipped), each as its fields."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if fields:
                events.append(fields)
                fields = {}
            if len(events) == count:
                break
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    return events


def test_websocket_echoes_text_and_binary_unchanged(server: ServerProcess) -> None:
    messages: list[str | bytes] = ["hello", "", "é ✓ 𝄞", b"\x00\xff binary", b"", "x" * 60_000]
    with connect(ws_url(server), additional_headers={"X-Request-ID": "ws-echo-session-1"}) as ws:
        assert ws.response is not None
        sent_id = ws.response.headers.get("x-request-id")
        assert sent_id == (None if server.profile in NO_ACCEPT_HEADERS else "ws-echo-session-1")
        for message in messages:
            ws.send(message)
            assert ws.recv(timeout=5) == message  # same type: text stays str, binary stays bytes
    line = eventually(lambda: access_line(server, "ws-echo-session-1"), "the session's access line")
    assert (line["method"], line["path"]) == ("WEBSOCKET", "/ws")
    assert line["close_code"] == 1000  # hypercorn's too: deploy/hypercorn_internals.py
    assert (line["messages_in"], line["messages_out"]) == (len(messages), len(messages))
    assert line["client"].startswith("127.0.0.1:")
    assert line["duration_ms"] > 0


def test_websocket_counts_in_metrics_over_workers(server: ServerProcess) -> None:
    before = scrape(server)
    with contextlib.ExitStack() as stack:
        # New connections: the kernel spreads them over both workers.
        sockets = [stack.enter_context(connect(ws_url(server))) for _ in range(6)]
        for ws in sockets:
            ws.send("ping")
            assert ws.recv(timeout=5) == "ping"
        during = scrape(server)
    labels = {"kind": "websocket", "route": "/ws"}
    assert (
        metric(during, "realtime_sessions_open", **labels)
        - metric(before, "realtime_sessions_open", **labels)
        == 6
    )

    close = "1000"

    def ended() -> str | None:
        text = scrape(server)
        delta = metric(text, "realtime_sessions_ended_total", close=close, **labels) - metric(
            before, "realtime_sessions_ended_total", close=close, **labels
        )
        return text if delta == 6 else None

    after = eventually(ended, f"6 sessions ended with {close}")
    assert metric(after, "realtime_sessions_open", **labels) == metric(
        before, "realtime_sessions_open", **labels
    )
    for direction in ("in", "out"):
        name, route = "websocket_messages_total", {"route": "/ws", "direction": direction}
        assert metric(after, name, **route) - metric(before, name, **route) == 6


def test_event_stream_format(server: ServerProcess) -> None:
    headers = {"X-Request-ID": "sse-format-stream-1"}
    with httpx.stream(
        "GET", f"{server.base_url}/events?interval=0.05", headers=headers, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-request-id"] == "sse-format-stream-1"
        events = read_events(response, 3)
    assert events == [{"id": str(n), "event": "tick", "data": json.dumps({"n": n})} for n in (1, 2, 3)]
    line = eventually(lambda: access_line(server, "sse-format-stream-1"), "the stream's access line")
    assert (line["path"], line["status"]) == ("/events", 200)
    assert line["events_sent"] >= 3


def test_event_stream_sends_its_events_on_time_and_no_ping_between_them(server: ServerProcess) -> None:
    # A ping is for a stream idle for STREAM_PING_SECONDS (15 s). A tick's timer firing a little
    # early once sent one, and another per early wake after it: about ten per event, which halved
    # the events 200 streams got from one worker in the bench.
    with httpx.stream("GET", f"{server.base_url}/events?interval=0.05", timeout=10) as response:
        started = time.monotonic()
        lines: list[str] = []
        events = 0
        for line in response.iter_lines():
            lines.append(line)
            events += line.startswith("id: ")
            if events == 20:
                break
        elapsed = time.monotonic() - started
    assert [line for line in lines if line.startswith(":")] == []
    # 20 events, the first at once: 0.95 s on schedule; bounded far above it on a busy machine.
    assert 0.9 <= elapsed < 5.0, elapsed


def test_event_stream_resumes_after_last_event_id(server: ServerProcess) -> None:
    headers = {"Last-Event-ID": "41"}
    with httpx.stream(
        "GET", f"{server.base_url}/events?interval=0.01", headers=headers, timeout=10
    ) as response:
        assert [event["id"] for event in read_events(response, 2)] == ["42", "43"]


@pytest.mark.parametrize(
    ("query", "headers"),
    [("interval=0", {}), ("interval=61", {}), ("interval=abc", {}), ("", {"Last-Event-ID": "-1"})],
)
def test_event_stream_bad_parameters_are_4xx(
    server: ServerProcess, query: str, headers: dict[str, str]
) -> None:
    response = httpx.get(f"{server.base_url}/events?{query}", headers=headers, timeout=5)
    assert 400 <= response.status_code < 500


def test_streams_stay_out_of_the_request_latency_histogram(server: ServerProcess) -> None:
    """A stream's lifetime is not a latency: it is counted as a stream, never in the HTTP histogram."""
    before = scrape(server)
    with httpx.stream("GET", f"{server.base_url}/events?interval=0.05", timeout=10) as response:
        read_events(response, 10)  # about half a second: would land in the 0.5-1 s buckets
    route = {"kind": "event_stream", "route": "/events", "close": "client"}

    def ended() -> str | None:
        text = scrape(server)
        done = metric(text, "realtime_sessions_ended_total", **route) - metric(
            before, "realtime_sessions_ended_total", **route
        )
        return text if done == 1 else None

    after = eventually(ended, "the stream counted as ended")
    assert metric(after, "http_requests_total", route="/events", status="200") == 0
    assert metric(after, "http_request_duration_seconds_count", route="/events", status="200") == 0
    delivered = metric(after, "event_stream_events_total", route="/events")
    assert delivered - metric(before, "event_stream_events_total", route="/events") >= 10


def test_websocket_message_over_the_limit_closes_1009(server: ServerProcess) -> None:
    with connect(ws_url(server), max_size=None) as ws:
        ws.send(b"x" * 65_537)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_websocket_from_another_site_is_403(server: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server), origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    same_site = f"http://127.0.0.1:{server.port}"
    with connect(ws_url(server), origin=same_site) as ws:  # type: ignore[arg-type]
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"


def masked_frame(first_byte: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([first_byte, 0x80 | len(payload)]) + mask + masked


# A frame the server must refuse (RFC 6455 5.1, 5.2, 8.1) and the close code it fails the connection with.
BAD_FRAMES = {
    "invalid UTF-8 in a text frame": (masked_frame(0x81, b"\xc3\x28 not utf-8"), 1007),  # FIN, text
    "unmasked frame": (b"\x81\x02hi", 1002),
    "reserved opcode": (masked_frame(0x83, b""), 1002),
}
# The server decodes frames before the app sees anything (hypercorn's failing without a close
# frame is mended in deploy/hypercorn_internals.py). granian 2.8 (src/asgi/io.rs receive) turns any error
# reading a frame into the app's disconnect with 1005, as it does a peer's close frame without a
# code, then ends the socket with a close frame without a code: nothing on the Python side can
# tell the cause. A strict xfail, so that a fix upstream shows up here.
CODELESS_CLOSE = {
    "granian": "granian 2.8 ends the socket with a close frame without a code (src/asgi/io.rs receive)"
}


@pytest.mark.parametrize("case", BAD_FRAMES)
def test_a_bad_frame_fails_the_connection_with_its_close_code(
    server: ServerProcess, case: str, request: pytest.FixtureRequest
) -> None:
    bad_frame, code = BAD_FRAMES[case]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.sendall(bad_frame)
        frame = head.partition(b"\r\n\r\n")[2]
        while len(frame) < 2 or len(frame) < 2 + (frame[1] & 0x7F):
            chunk = sock.recv(4096)
            assert chunk, frame
            frame += chunk
    assert frame[0] == 0x88, frame  # FIN, close
    if server.profile in CODELESS_CLOSE:
        request.applymarker(pytest.mark.xfail(strict=True, reason=CODELESS_CLOSE[server.profile]))
    assert int.from_bytes(frame[2:4], "big") == code, frame
