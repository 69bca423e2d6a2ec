"""deploy/hypercorn_internals.py: inside its tested range the guarantee, outside it hypercorn's own
behaviour and one warning line per patch.

Each test serves a tiny ASGI app with hypercorn's public `serve()` on a loopback socket, in this
process, and talks to it as a WebSocket peer over a raw socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.protocol import h11, quic

from deploy import carried, hypercorn_internals
from deploy.carried import warn_outside_tested
from deploy.hypercorn import PROFILE
from deploy.hypercorn_internals import (
    ACCEPT_SETTLE,
    CARRIED,
    H3_LATE_BODY,
    H3_PROMPT_STOP,
    WEBSOCKET_CLOSE_CODES,
    ListenerRecordingLoop,
    settle_accepted,
    worker_loop,
)
from service.settings import Settings
from tests.support.certs import Certificates, make_certificates
from tests.support.listeners import until_listener_closed

HYPERCORNS_OWN_STREAM = h11.WSStream
HYPERCORNS_OWN_H3 = quic.H3Protocol
BOUND = 5.0
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked_frame(first_byte: int, payload: bytes) -> bytes:
    """One frame a client sends (RFC 6455 5.3: masked), payload under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([first_byte, 0x80 | len(payload)]) + mask + masked


def close_frame(code: int) -> bytes:
    return masked_frame(0x88, code.to_bytes(2, "big"))


INVALID_UTF8_TEXT = masked_frame(0x81, b"\xc3\x28 not utf-8")  # FIN, text


@pytest.fixture(autouse=True)
def hypercorns_own_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from hypercorn's own stream, and puts it back."""
    monkeypatch.setattr(h11, "WSStream", HYPERCORNS_OWN_STREAM)
    monkeypatch.setattr(quic, "H3Protocol", HYPERCORNS_OWN_H3)


@pytest.fixture
def untested_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """The venv reports hypercorn 0.99.0, outside every patch's tested range; its code is still 0.18's."""
    real = carried.installed_version
    monkeypatch.setattr(
        carried, "installed_version", lambda name: "0.99.0" if name == "hypercorn" else real(name)
    )


class Peer:
    """A WebSocket peer on a raw socket, so it can send what a well-behaved client never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    async def close_code(self) -> int | None:
        """The code of the close frame the server answers with, or None if it ends without one."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), BOUND)
            assert head[0] == 0x88, head  # FIN, close
            body = await asyncio.wait_for(self.reader.readexactly(head[1] & 0x7F), BOUND)
        except asyncio.IncompleteReadError:
            return None
        return int.from_bytes(body[:2], "big")


@asynccontextmanager
async def websocket_session() -> AsyncIterator[tuple[Peer, asyncio.Queue[int]]]:
    """hypercorn serving an app that accepts one WebSocket and queues the code of its disconnect."""
    codes: asyncio.Queue[int] = asyncio.Queue()

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan")  # hypercorn serves on without one
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            pass
        codes.put_nowait(message["code"])

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.errorlog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait, mode="asgi"))
    try:
        for _ in range(100):  # serve() starts listening once its lifespan start-up is done
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.02)
        writer.write(HANDSHAKE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        assert head.startswith(b"HTTP/1.1 101"), head
        yield Peer(reader, writer), codes
        writer.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, BOUND)


async def peer_closes(code: int) -> tuple[int | None, int]:
    """The peer closes with `code`: what the server answers, and what the app is told."""
    async with websocket_session() as (peer, codes):
        await peer.send(close_frame(code))
        answer = await peer.close_code()
        return answer, await asyncio.wait_for(codes.get(), BOUND)


async def peer_sends(frame: bytes) -> tuple[int | None, int]:
    """The peer sends a frame the server must refuse: its close frame's code, and the app's."""
    async with websocket_session() as (peer, codes):
        await peer.send(frame)
        answer = await peer.close_code()
        return answer, await asyncio.wait_for(codes.get(), BOUND)


def test_the_profile_carries_every_patch_of_the_module() -> None:
    assert PROFILE.carried == CARRIED
    assert all(patch.module == "deploy/hypercorn_internals.py" for patch in CARRIED)
    assert WEBSOCKET_CLOSE_CODES.in_range()  # the locked release is a tested one
    assert H3_LATE_BODY.in_range()
    assert ACCEPT_SETTLE.in_range()
    assert H3_PROMPT_STOP.in_range()


def test_inside_the_range_the_app_gets_the_peers_close_code() -> None:
    assert hypercorn_internals.install()
    assert h11.WSStream is hypercorn_internals.close_code_stream()
    assert asyncio.run(peer_closes(4001)) == (4001, 4001)


def test_inside_the_range_a_bad_frame_fails_the_connection_with_its_code() -> None:
    assert hypercorn_internals.install()
    assert asyncio.run(peer_sends(INVALID_UTF8_TEXT)) == (1007, 1007)
    assert asyncio.run(peer_sends(b"\x81\x02hi")) == (1002, 1002)  # unmasked: a protocol error


@pytest.mark.usefixtures("untested_release")
def test_outside_the_range_hypercorns_own_stream_serves() -> None:
    assert not hypercorn_internals.install()
    assert h11.WSStream is HYPERCORNS_OWN_STREAM
    # hypercorn's own behaviour, as the patch's fallback says: the peer's close is answered, the app
    # is told 1006; a bad frame ends the connection without a close frame.
    assert asyncio.run(peer_closes(4001)) == (4001, 1006)
    assert asyncio.run(peer_sends(INVALID_UTF8_TEXT)) == (None, 1006)


@pytest.mark.usefixtures("untested_release")
def test_outside_the_range_one_warning_line_per_patch(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="deploy"):
        lines = warn_outside_tested(PROFILE.carried)
    assert len(lines) == len(CARRIED) == len(caplog.records)
    for patch, line in zip(CARRIED, lines, strict=True):
        assert "\n" not in line
        assert f"hypercorn 0.99.0 is outside the releases {patch.module} was tested on" in line
        assert patch.capability in line
        assert patch.fallback in line


@pytest.mark.usefixtures("untested_release", "isolated_env")
def test_outside_the_range_every_setting_still_works() -> None:
    # The patch gives no setting of its own: the WebSocket settings are hypercorn's public options.
    explicit = Settings(server="hypercorn", ws_max_message_bytes=4096, ws_ping_interval=10.0)
    assert PROFILE.refusals(explicit) == []


def test_inside_the_range_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="deploy"):
        assert warn_outside_tested(PROFILE.carried) == []
    assert not caplog.records


def test_the_patch_touches_nothing_of_hypercorns_before_it_applies() -> None:
    # Importing the module must not import a private module a later release may have moved.
    source = Path(hypercorn_internals.__file__).read_text(encoding="utf-8")
    top_level = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top_level if "hypercorn" in line or "wsproto" in line], top_level


def test_inside_the_range_quic_connections_get_the_mended_h3_protocol() -> None:
    # What it mends is seen on the wire: tests/smoke/test_http3.py (a body sent after the answer).
    hypercorn_internals.install(h3=True)
    assert quic.H3Protocol is hypercorn_internals.late_body_h3_protocol()
    assert issubclass(quic.H3Protocol, HYPERCORNS_OWN_H3)


@pytest.mark.usefixtures("untested_release", "isolated_env")
def test_outside_the_range_h3_is_refused_naming_the_patch() -> None:
    hypercorn_internals.install(h3=True)
    assert quic.H3Protocol is HYPERCORNS_OWN_H3
    tls = {"tls_cert_file": Path("/run/tls/tls.crt"), "tls_key_file": Path("/run/tls/tls.key")}
    h3 = Settings(server="hypercorn", **tls, http_versions="http/1.1,h3", workers=1, worker_timeout=0)
    refusals = PROFILE.refusals(h3)
    assert len(refusals) == 1
    assert "h3 needs deploy/hypercorn_internals.py's patch, tested on hypercorn>=0.18,<0.19" in refusals[0]
    assert PROFILE.refusals(Settings(server="hypercorn", **tls, http_versions="http/1.1,h2")) == []


async def answer_to_a_request_sent_as_the_worker_stops(certs: Certificates) -> bytes:
    """A TLS connection accepted (its handshake done), no request yet; the worker's stop begins
    (deploy/hypercorn.py's trigger: its listener closes); then the request, at once."""

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan")  # hypercorn serves on without one
        body = scope["path"].encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.certfile, config.keyfile = str(certs.cert), str(certs.key)
    config.errorlog = None
    stop = asyncio.Event()

    async def stop_requested() -> None:  # the worker's trigger, without the supervisor's flag
        await stop.wait()
        await settle_accepted()

    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop_requested, mode="asgi"))
    client = certs.client_context(with_certificate=False)
    try:
        for _ in range(100):  # serve() starts listening once its lifespan start-up is done
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.02)
        stop.set()
        await until_listener_closed(port)
        writer.write(b"GET /late HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            answer = await asyncio.wait_for(reader.read(), BOUND)
        except (ConnectionError, ssl.SSLError):  # closed before the request came
            answer = b""
        writer.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, BOUND)
    return answer


def stop_with_a_request_on_its_way(certs: Certificates) -> bytes:
    with asyncio.Runner(loop_factory=worker_loop) as runner:
        return runner.run(answer_to_a_request_sent_as_the_worker_stops(certs))


def test_inside_the_range_a_stopping_worker_answers_what_it_has_just_accepted(tmp_path: Path) -> None:
    assert isinstance(worker_loop(), ListenerRecordingLoop)
    answer = stop_with_a_request_on_its_way(make_certificates(tmp_path))
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert answer.endswith(b"/late")


@pytest.mark.usefixtures("untested_release")
def test_outside_the_range_a_stopping_worker_cuts_what_it_has_just_accepted(tmp_path: Path) -> None:
    # hypercorn's own stop, as the patch's fallback says: the idle connection is closed unanswered.
    assert not isinstance(worker_loop(), ListenerRecordingLoop)
    assert stop_with_a_request_on_its_way(make_certificates(tmp_path)) == b""


# --- H3_PROMPT_STOP --------------------------------------------------------------------------


async def _datagrams_while_waking(bind: str, listener: socket.socket) -> list[bytes]:
    waking = asyncio.get_running_loop().create_task(hypercorn_internals.wake_quic_listeners([bind]))
    await asyncio.sleep(hypercorn_internals.QUIC_WAKE_SECONDS * 3.5)
    done = waking.done()
    waking.cancel()
    received = []
    while True:
        try:
            received.append(listener.recv(64))
        except BlockingIOError:
            break
    assert done == (not received)  # it returns at once only when it sends nothing
    return received


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # a wildcard bind is woken on loopback
def test_inside_the_range_a_stopping_quic_listener_is_woken_with_empty_datagrams(host: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        bind = f"{host}:{listener.getsockname()[1]}"
        received = asyncio.run(_datagrams_while_waking(bind, listener))
    assert len(received) >= 2
    assert set(received) == {b""}  # no QUIC header: hypercorn drops it


@pytest.mark.usefixtures("untested_release")
def test_outside_the_range_a_stopping_quic_listener_is_left_alone() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        received = asyncio.run(_datagrams_while_waking(f"127.0.0.1:{listener.getsockname()[1]}", listener))
    assert received == []
