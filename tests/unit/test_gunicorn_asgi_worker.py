"""The gunicorn-asgi request-head deadline, on gunicorn's real ASGI protocol over 127.0.0.1.

Each test serves one connection at a time with HeadTimeoutASGIProtocol and a short deadline;
tests/resilience/test_limits.py checks the same through the real server process.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.workers import gasgi

from deploy.gunicorn_asgi_worker import HeadTimeoutASGIProtocol, HeadTimeoutASGIWorker
from devkit.connections import DEADLINE, LATE, REQUEST, connected, read_response, seconds_until_closed

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Log:
    access_log_enabled = False

    def _ignore(self, *args: Any, **kwargs: Any) -> None:
        pass

    debug = info = warning = error = exception = access = _ignore


class _App:
    """`/slow` answers after 2 deadlines; `/background` answers, then keeps running for 2 deadlines."""

    def __init__(self) -> None:
        self.background_done = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/slow":
            await asyncio.sleep(2 * DEADLINE)
        body = path.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if path == "/background":
            await asyncio.sleep(2 * DEADLINE)
            self.background_done = True


@asynccontextmanager
async def serving(app: _App) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One client connection to gunicorn's ASGI protocol with our deadline."""
    cfg = GunicornConfig()
    cfg.set("keepalive", 30)  # longer than any test: only our deadline closes
    worker = SimpleNamespace(
        cfg=cfg,
        log=_Log(),
        asgi=app,
        loop=asyncio.get_running_loop(),
        nr_conns=0,
        nr=0,
        max_requests=sys.maxsize,
        alive=True,
        state={},
        request_head_timeout=DEADLINE,
    )
    async with connected(lambda: HeadTimeoutASGIProtocol(worker)) as streams:
        yield streams


@pytest.mark.anyio
async def test_silent_connection_is_closed_at_the_deadline() -> None:
    async with serving(_App()) as (reader, _):
        closed = await seconds_until_closed(reader, time.monotonic())
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_trickling_head_is_closed_at_the_deadline_whatever_arrives() -> None:
    async with serving(_App()) as (reader, writer):
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
async def test_deadline_restarts_after_each_response_on_keep_alive() -> None:
    async with serving(_App()) as (reader, writer):
        for index in range(3):  # each within the deadline, together beyond it
            await asyncio.sleep(DEADLINE * 0.6)
            path = str(index).encode()
            writer.write(REQUEST % path)
            assert await read_response(reader) == b"/" + path
        answered = time.monotonic()
        closed = await seconds_until_closed(reader, answered)
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_request_being_handled_is_never_cut() -> None:
    async with serving(_App()) as (reader, writer):
        writer.write(REQUEST % b"slow")
        assert await read_response(reader) == b"/slow"  # took 2 deadlines
        writer.write(REQUEST % b"again")  # the connection is still usable
        assert await read_response(reader) == b"/again"


@pytest.mark.anyio
async def test_pipelined_requests_are_all_answered() -> None:
    async with serving(_App()) as (reader, writer):
        # The second head is complete at once but only parsed once the slow response is out.
        writer.write(REQUEST % b"slow" + REQUEST % b"next" + b"GET /part")
        assert await read_response(reader) == b"/slow"
        assert await read_response(reader) == b"/next"
        answered = time.monotonic()
        closed = await seconds_until_closed(reader, answered)  # the partial third head is too slow
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_application_running_past_its_response_is_not_cut() -> None:
    app = _App()
    async with serving(app) as (reader, writer):
        writer.write(REQUEST % b"background")
        assert await read_response(reader) == b"/background"
        answered = time.monotonic()
        closed = await seconds_until_closed(reader, answered)
    assert app.background_done
    # The connection turns idle (gunicorn's keep-alive sense) only once the call returns.
    assert 3 * DEADLINE - 0.05 <= closed < 3 * DEADLINE + LATE


@pytest.mark.anyio
async def test_no_deadline_without_the_setting() -> None:
    worker = SimpleNamespace(cfg=GunicornConfig(), log=_Log(), asgi=None, loop=asyncio.get_running_loop())
    protocol = HeadTimeoutASGIProtocol(worker)
    protocol.head_deadline.arm()
    assert protocol.head_deadline.timeout is None
    assert not protocol.head_deadline.armed


def test_the_worker_serves_its_connections_with_our_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    # gunicorn 27 builds the protocol with `lambda: ASGIProtocol(self)`: the name the worker rebinds.
    assert "ASGIProtocol(self)" in inspect.getsource(gasgi.ASGIWorker._serve)
    monkeypatch.setattr(gasgi, "ASGIProtocol", gasgi.ASGIProtocol)  # restored after the test
    monkeypatch.setattr(gasgi.ASGIWorker, "run", lambda self: None)  # no event loop here
    HeadTimeoutASGIWorker.__new__(HeadTimeoutASGIWorker).run()
    assert gasgi.ASGIProtocol is HeadTimeoutASGIProtocol
