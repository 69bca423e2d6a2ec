"""deploy/uvicorn_internals.py: inside the tested range the guarantees, outside it uvicorn's own protocol.

The protocol is served over 127.0.0.1 on a real event loop. Outside the range is an installed
release the patches were not tested on (deploy.carried.installed_version reports it);
tests/smoke/test_uvicorn_untested_release.py starts real servers with such a release.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import uvicorn
from gunicorn.glogging import Logger
from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from deploy import carried
from deploy import gunicorn as gunicorn_adapter
from deploy import uvicorn as uvicorn_adapter
from deploy.carried import warn_outside_tested
from deploy.profile import UnsupportedSettingError
from deploy.profiles import load_profile
from deploy.uvicorn_internals import (
    CONFIG_ATTRIBUTE,
    GUNICORN_PATCHES,
    UVICORN_PATCHES,
    HeadTimeoutHttpToolsProtocol,
    SettlingServer,
    http_protocol,
)
from devkit.connections import (
    DEADLINE,
    LATE,
    REQUEST,
    connected,
    read_response,
    seconds_until_closed,
)
from service.settings import Settings
from tests.support.listeners import until_listener_closed

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

UNTESTED = {"uvicorn": "0.99.0", "uvicorn-worker": "0.99.0"}
UPGRADE = (
    b"GET /ws HTTP/%s\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture
def untested(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn and uvicorn-worker report releases beyond every tested range."""
    monkeypatch.setattr(carried, "installed_version", UNTESTED.get)


class _App:
    """Answers HTTP with its path; refuses a WebSocket after noting the HTTP version it was told."""

    def __init__(self) -> None:
        self.websocket_versions: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.websocket_versions.append(scope["http_version"])
            await receive()  # websocket.connect
            await send({"type": "websocket.close"})
            return
        body = scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def protocol_for(
    app: _App, protocol_class: type[HttpToolsProtocol] = HeadTimeoutHttpToolsProtocol
) -> Callable[[], HttpToolsProtocol]:
    config = Config(app, lifespan="off", log_config=None, ws="websockets-sansio", timeout_keep_alive=30)
    setattr(config, CONFIG_ATTRIBUTE, DEADLINE)  # uvicorn's own keep-alive timer would close later
    state = ServerState()
    return lambda: protocol_class(config, state, {})  # type: ignore[call-arg]


# --- inside the tested range (the locked release) ---


def test_the_locked_releases_are_inside_every_tested_range() -> None:
    assert all(patch.applies() for patch in GUNICORN_PATCHES)
    assert http_protocol() is HeadTimeoutHttpToolsProtocol


@pytest.mark.anyio
async def test_a_silent_connection_is_closed_at_the_deadline() -> None:
    async with connected(protocol_for(_App())) as (reader, _):
        closed = await seconds_until_closed(reader, time.monotonic())
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_a_trickling_head_is_closed_at_the_deadline_whatever_arrives() -> None:
    async with connected(protocol_for(_App())) as (reader, writer):
        start = time.monotonic()

        async def trickle() -> None:
            for byte in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 1000:
                writer.write(bytes([byte]))
                await asyncio.sleep(DEADLINE / 10)

        trickling = asyncio.create_task(trickle())
        closed = await seconds_until_closed(reader, start)
        trickling.cancel()
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_the_deadline_restarts_after_each_response() -> None:
    async with connected(protocol_for(_App())) as (reader, writer):
        for index in range(3):  # each within the deadline, together beyond it
            await asyncio.sleep(DEADLINE * 0.6)
            path = str(index).encode()
            writer.write(REQUEST % path)
            assert await read_response(reader) == b"/" + path
        closed = await seconds_until_closed(reader, time.monotonic())
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


async def _websocket_version(app: _App, protocol_class: type[HttpToolsProtocol], version: bytes) -> str:
    async with connected(protocol_for(app, protocol_class)) as (reader, writer):
        writer.write(UPGRADE % version)
        status = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        assert b" 403 " in status  # the app closed before accepting
    assert len(app.websocket_versions) == 1
    return app.websocket_versions[0]


@pytest.mark.anyio
@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
async def test_the_websocket_scope_has_the_requests_http_version(version: bytes) -> None:
    assert await _websocket_version(_App(), HeadTimeoutHttpToolsProtocol, version) == version.decode()


@pytest.mark.anyio
async def test_without_the_patch_uvicorn_says_1_1_for_an_http_1_0_upgrade() -> None:
    # What WEBSOCKET_HTTP_VERSION's fallback states, and why the patch exists.
    assert await _websocket_version(_App(), HttpToolsProtocol, b"1.0") == "1.1"


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):  # bounded: 5 s
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


async def _answer_to_a_request_sent_as_the_worker_stops(server_class: type[uvicorn.Server]) -> bytes:
    """A connection accepted, idle; the server's stop begins (its listener closes); then the request."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = Config(_App(), lifespan="off", log_config=None, http="httptools")
    server = server_class(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    await _until(lambda: server.started)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _until(lambda: bool(server.server_state.connections))  # accepted by the worker
    server.should_exit = True
    await until_listener_closed(port)
    writer.write(b"GET /late HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    except ConnectionResetError:  # closed before the request came: the kernel resets it
        answer = b""
    writer.close()
    await asyncio.wait_for(serving, timeout=5)
    return answer


@pytest.mark.anyio
async def test_a_stopping_gunicorn_worker_answers_what_it_has_just_accepted() -> None:
    # uvicorn's own shutdown closes the idle connection as the listener closes: the request that
    # follows at once goes unanswered. The settling server answers it, then stops.
    assert await _answer_to_a_request_sent_as_the_worker_stops(uvicorn.Server) == b""
    answer = await _answer_to_a_request_sent_as_the_worker_stops(SettlingServer)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(b"/late")


def _worker(settings: Settings) -> Any:
    application = gunicorn_adapter.application(settings)
    worker = application.cfg.worker_class(0, 0, [], application, 30, application.cfg, Logger(application.cfg))
    worker.tmp.close()
    return worker


def test_gunicorns_uvicorn_worker_gets_our_options_and_the_head_deadline() -> None:
    config = _worker(Settings(request_head_timeout=7)).config
    assert (config.loop, config.http, config.ws) == (
        "uvloop",
        HeadTimeoutHttpToolsProtocol,
        "websockets-sansio",
    )
    assert (config.lifespan, config.proxy_headers, config.server_header) == ("on", False, False)
    assert getattr(config, CONFIG_ATTRIBUTE) == 7


# --- outside the tested range ---


@pytest.mark.usefixtures("untested")
def test_outside_the_range_uvicorn_runs_its_own_httptools_protocol() -> None:
    assert not any(patch.applies() for patch in GUNICORN_PATCHES)
    config = uvicorn_adapter.build_config(Settings())
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    assert config.loop == "uvloop"  # the rest of the fast path stays


@pytest.mark.usefixtures("untested")
def test_outside_the_range_gunicorns_uvicorn_worker_keeps_our_public_options_only() -> None:
    config = _worker(Settings()).config
    assert (config.loop, config.http, config.ws) == ("uvloop", "httptools", "websockets-sansio")
    assert config.timeout_graceful_shutdown == Settings().graceful_timeout
    assert not hasattr(config, CONFIG_ATTRIBUTE)


@pytest.mark.usefixtures("untested")
@pytest.mark.parametrize(
    ("profile", "patches"), [("uvicorn", UVICORN_PATCHES), ("gunicorn", GUNICORN_PATCHES)]
)
def test_outside_the_range_one_warning_line_per_patch(
    profile: str, patches: tuple[carried.CarriedPatch, ...], caplog: pytest.LogCaptureFixture
) -> None:
    assert set(patches) <= set(load_profile(profile).carried)  # gunicorn adds its own
    with caplog.at_level(logging.WARNING, logger="deploy"):
        warn_outside_tested(patches)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == len(patches)
    for line, patch in zip(lines, patches, strict=True):
        assert "\n" not in line
        assert f"{patch.distribution} 0.99.0" in line
        assert patch.capability in line
        assert patch.fallback in line


@pytest.mark.usefixtures("untested")
@pytest.mark.parametrize("profile", ["uvicorn", "gunicorn"])
def test_outside_the_range_an_explicit_head_timeout_is_refused_and_the_default_starts(profile: str) -> None:
    load_profile(profile).check(Settings())
    with pytest.raises(UnsupportedSettingError, match="APP_REQUEST_HEAD_TIMEOUT"):
        load_profile(profile).check(Settings(request_head_timeout=3))
