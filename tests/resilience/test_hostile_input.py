"""Malformed and hostile HTTP/1.1 over raw sockets, on every profile (property-based, bounded).

For every generated request: no server error (5xx, except 501/505, the protocol's own answers to an
unknown method/transfer coding and an unsupported version), and either a response or a close
within a few seconds. Afterwards the server process is alive and GET / answers 200.
"""

from __future__ import annotations

import socket
import time
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.process import ServerProcess
from tests.resilience.support import RawResult, Report, connect, read_response_head

pytestmark = pytest.mark.resilience

FIRST_WAIT = 2.0  # for a response or close
AFTER_HALF_CLOSE = 3.0  # a server still waiting for body bytes must give up once we send EOF
PROTOCOL_5XX = {501, 505}

METHODS = st.sampled_from(
    [
        b"GET",
        b"POST",
        b"PUT",
        b"DELETE",
        b"OPTIONS",
        b"TRACE",
        b"CONNECT",
        b"PRI",
        b"get",
        b"FOO",
        b"G\x00T",
        b"GET GET",
        b"\xff\xfe",
        b"",
        b"GE\tT",
        b"X" * 300,
    ]
) | st.binary(min_size=1, max_size=8)
TARGETS = st.sampled_from(
    [
        b"/",
        b"/echo",
        b"/consume",
        b"/pid",
        b"/no/such",
        b"/%ff%fe",
        b"/\xff\xfe\xc3\x28",
        b"*",
        b"http://evil.example/",
        b"//",
        b"/..%2f..%2fetc/passwd",
        b"/?q=\xc3\x28",
        b"/" + b"a" * 4000,
        b"",
        b"/ /",
        b"/\r\n",
    ]
)
VERSIONS = st.sampled_from(
    [
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2.0",
        b"HTTP/0.9",
        b"HTTP/9.9",
        b"HTTP/1.1.1",
        b"HTTP/01.1",
        b"HTTP/",
        b"FOO/1.1",
        b"http/1.1",
        b"HTTP/1.1 extra",
        b"",
    ]
)
CONTENT_LENGTHS = st.sampled_from(
    [
        b"-1",
        b"99999999999999999999999999",
        b"18446744073709551616",
        b"abc",
        b"1e3",
        b" 5",
        b"5, 5",
        b"0x10",
        b"+5",
        b"",
        b"2000000",
    ]
)
TRANSFER_ENCODINGS = st.sampled_from(
    [
        b"chunked",
        b"gzip, chunked",
        b"chunked, gzip",
        b"identity",
        b"xchunked",
        b" chunked",
        b"CHUNKED",
        b"chunked\x00",
    ]
)
ODD_HEADERS = st.sampled_from(
    [
        (b"X-Inject", b"a\r\nInjected: yes"),
        (b"X-Bare-LF", b"a\nb"),
        (b"X-Bare-CR", b"a\rb"),
        (b"Bad Name", b"x"),
        (b"X-Utf8", b"\xff\xfe\xc3\x28"),
        (b"NoColon", None),
        (b" X-Folded", b"continued"),
        (b"Host", b"evil.example"),
        (b"Host", b""),
        (b"Content-Type", b"application/json"),
        (b"Content-Type", b"\xff"),
        (b"Expect", b"100-continue"),
        (b"Connection", b"close"),
        (b"Upgrade", b"h2c"),
        (b"X-Request-ID", b"\r\n"),
        (b"", b"empty-name"),
    ]
)
BODIES = st.sampled_from(
    [
        b"",
        b'{"message": "hi"}',
        b'{"message": ',
        b"\xff\xfe",
        b'{"message": "\xed\xa0\x80"}',
        b"5\r\nhello\r\n0\r\n\r\n",
        b"zz\r\n",
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
) | st.binary(max_size=64)


@st.composite
def hostile_requests(draw: st.DrawFn) -> bytes:
    method, target, version = draw(METHODS), draw(TARGETS), draw(VERSIONS)
    body = draw(BODIES)
    headers: list[tuple[bytes, bytes | None]] = [(b"Host", b"127.0.0.1")]
    headers += draw(st.lists(ODD_HEADERS, max_size=3))
    length = draw(st.sampled_from(["match", "none", "hostile", "two"]))
    if length == "match":
        headers.append((b"Content-Length", str(len(body)).encode()))
    elif length == "hostile":
        headers.append((b"Content-Length", draw(CONTENT_LENGTHS)))
    elif length == "two":  # conflicting lengths
        headers += [(b"Content-Length", str(len(body)).encode()), (b"Content-Length", b"1")]
    if draw(st.booleans()):  # smuggling shapes: TE with or without CL
        headers.append((b"Transfer-Encoding", draw(TRANSFER_ENCODINGS)))
    separator = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    lines = [b" ".join(part for part in (method, target, version) if part)]
    lines += [name if value is None else name + b": " + value for name, value in headers]
    return separator.join(lines) + separator + separator + body


def exchange(port: int, payload: bytes) -> RawResult:
    with connect(port) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            return RawResult(None, closed=True, timed_out=False, elapsed=0.0)
        result = read_response_head(sock, FIRST_WAIT)
        if result.timed_out:
            # Perhaps legitimately waiting for body bytes we never send: end our side.
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                return RawResult(None, closed=True, timed_out=False, elapsed=result.elapsed)
            later = read_response_head(sock, AFTER_HALF_CLOSE)
            later.elapsed += result.elapsed
            return later
        return result


OUTCOMES: dict[str, Counter[str]] = {}


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(payload=hostile_requests())
def test_hostile_request_gets_no_5xx_and_no_hang(limited: ServerProcess, payload: bytes) -> None:
    result = exchange(limited.port, payload)
    OUTCOMES.setdefault(limited.profile, Counter())[result.describe()] += 1
    assert not result.timed_out, f"hang: neither response nor close for {payload[:300]!r}"
    assert result.status is None or result.status < 500 or result.status in PROTOCOL_5XX, (
        f"{result.describe()} for {payload[:300]!r}\n{limited.log()[-2000:]}"
    )
    assert limited.process.poll() is None, limited.log()[-3000:]


def test_server_survives_hostile_input(limited: ServerProcess, report: Report) -> None:
    """Runs after the property test for the same profile (same shared server)."""
    start = time.monotonic()
    response = httpx.get(limited.base_url + "/", timeout=10)
    report.add(
        f"hostile_input[{limited.profile}]",
        outcomes=dict(OUTCOMES.get(limited.profile, {})),
        get_root_after=response.status_code,
        get_root_ms=round((time.monotonic() - start) * 1000, 1),
    )
    assert limited.process.poll() is None
    assert response.status_code == 200


UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
BROKEN_UPGRADES = {
    "missing key": b"GET /ws HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n",
    "wrong version": b"GET /ws HTTP/1.1\r\nHost: x\r\n" + UPGRADE + KEY + b"Sec-WebSocket-Version: 8\r\n\r\n",
    "no version": b"GET /ws HTTP/1.1\r\nHost: x\r\n" + UPGRADE + KEY + b"\r\n",
    "malformed key": b"GET /ws HTTP/1.1\r\nHost: x\r\n"
    + UPGRADE
    + b"Sec-WebSocket-Key: not-base64!\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "POST upgrade": b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    + UPGRADE
    + KEY
    + b"Sec-WebSocket-Version: 13\r\n\r\n",
    "HTTP/1.0 upgrade": b"GET /ws HTTP/1.0\r\nHost: x\r\n"
    + UPGRADE
    + KEY
    + b"Sec-WebSocket-Version: 13\r\n\r\n",
}


# The app refuses what the server lets through and it can see (service/api/websocket_handshake.py
# handshake_problem: the HTTP version, the key). An ASGI WebSocket scope carries no method.
# What remains is upgraded (101): a strict xfail, so that a fix upstream shows up here.
UPGRADE_GAPS = {
    ("granian", "POST upgrade"): (
        "granian upgrades a POST (src/ws.rs upgrade_intent checks no method) and its WebSocket"
        " scope has no method for the app to refuse"
    ),
}


@pytest.mark.parametrize("case", BROKEN_UPGRADES)
def test_broken_websocket_upgrade_gets_4xx(
    limited: ServerProcess, case: str, request: pytest.FixtureRequest
) -> None:
    """Never a 101 on a handshake that breaks RFC 6455, never a 5xx, and the server lives on."""
    result = exchange(limited.port, BROKEN_UPGRADES[case])
    assert limited.process.poll() is None
    gap = UPGRADE_GAPS.get((limited.profile, case))
    if gap is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=gap))
    assert 400 <= (result.status or 0) < 500, f"{result.describe()}\n{limited.log()[-2000:]}"
