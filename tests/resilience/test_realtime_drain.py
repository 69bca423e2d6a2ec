"""SIGTERM with long-lived connections open: each one is told, none is simply dropped.

Per profile, 2 workers, SOCKETS WebSockets and STREAMS event streams open at SIGTERM:
- during the drain window, a new upgrade and a new stream get 503 with Retry-After,
  while the open ones keep working;
- when the graceful stop begins, every WebSocket receives a close frame 1012 and
  every stream a final `event: shutdown` with a jittered `retry:`, then its clean end;
- the server exits 0, well before APP_GRACEFUL_TIMEOUT would have run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from deploy.profiles import PROFILES
from devkit.process import LOOPBACK, ServerProcess, running_server
from tests.resilience.support import Report, wait_workers

pytestmark = [pytest.mark.resilience, pytest.mark.demo_routes]

SOCKETS = 100
STREAMS = 100
WINDOW = 2
# Far above what the stop takes: the close and shutdown events must come at its start, not at its end.
GRACEFUL = 15
RETRY_RANGE_MS = (1000, 5000)
# Servers without ASGI's WebSocket denial-response extension: an upgrade refused before
# `accept` can only be answered with their 403 (service/api/websocket_handshake.py refuse_upgrade).
NO_DENIAL_RESPONSE = {"gunicorn-asgi"}
BOUND_SECONDS = 30 + WINDOW + GRACEFUL  # the whole exchange, opening 200 sessions included


@dataclass
class Figures:
    ws_closed_1012: int = 0
    ws_other: list[str] = field(default_factory=list)
    streams_shutdown: int = 0
    streams_other: list[str] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)


async def open_stream(port: int, writers: list[asyncio.StreamWriter]) -> asyncio.StreamReader:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writers.append(writer)  # a writer garbage-collected closes its connection
    writer.write(b"GET /events?interval=0.5 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader


async def first_event(reader: asyncio.StreamReader) -> None:
    while True:
        line = await reader.readline()
        assert line, "the stream ended before its first event"
        if line.startswith(b"id: "):
            return


async def until_shutdown(reader: asyncio.StreamReader, figures: Figures) -> None:
    """Read to the end: an `event: shutdown` with a `retry:`, then the chunked body's clean end."""
    seen_shutdown = False
    try:
        while True:
            line = await reader.readline()
            if not line:
                break  # EOF
            if line.startswith(b"event: shutdown"):
                seen_shutdown = True
            elif seen_shutdown and line.startswith(b"retry: "):
                figures.retries.append(int(line[7:]))
            elif seen_shutdown and line == b"0\r\n" and (await reader.readline()) == b"\r\n":
                figures.streams_shutdown += 1  # the last chunk: the body ended cleanly
                return
        figures.streams_other.append("shutdown" if seen_shutdown else "eof without shutdown")
    except (OSError, asyncio.IncompleteReadError) as error:
        figures.streams_other.append(type(error).__name__)


async def until_closed(ws: ClientConnection, figures: Figures) -> None:
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
        if code == 1012:
            figures.ws_closed_1012 += 1
        else:
            figures.ws_other.append(f"{code}")


async def refused_during_drain(server: ServerProcess) -> tuple[int, str | None, str, str | None]:
    """A new stream, then a new upgrade, once the drain window has reached the workers."""
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(20):  # the workers poll the drain file every 0.1 s
            stream = await client.get(f"{server.base_url}/events")
            if stream.status_code != 200:
                break
            await asyncio.sleep(0.05)
    try:
        async with connect(f"ws://{LOOPBACK}:{server.port}/ws", open_timeout=2) as ws:
            await ws.recv(timeout=2)
            upgrade, retry = "accepted", None
    except InvalidStatus as refused:
        upgrade, retry = str(refused.response.status_code), refused.response.headers.get("retry-after")
    except ConnectionClosed as closed:
        upgrade, retry = f"accepted, then closed {closed.rcvd.code if closed.rcvd else None}", None
    return stream.status_code, stream.headers.get("retry-after"), upgrade, retry


async def sigterm_with_sessions_open(server: ServerProcess) -> tuple[Figures, dict[str, object]]:
    figures = Figures()
    url = f"ws://{LOOPBACK}:{server.port}/ws"
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(url, open_timeout=10)) for _ in range(SOCKETS)]
        writers: list[asyncio.StreamWriter] = []
        stack.callback(lambda: [writer.close() for writer in writers])
        readers = [await open_stream(server.port, writers) for _ in range(STREAMS)]
        await asyncio.gather(*(first_event(reader) for reader in readers))
        for ws in sockets:
            await ws.send("before")
            assert await ws.recv() == "before"
        watchers = [asyncio.create_task(until_closed(ws, figures)) for ws in sockets[1:]]
        watchers += [asyncio.create_task(until_shutdown(reader, figures)) for reader in readers]
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)  # the launcher's drain file, seen by the workers' 0.1 s poll
        refused = await refused_during_drain(server)
        await sockets[0].send("during the window")
        still_served = await sockets[0].recv() == "during the window"
        watchers.append(asyncio.create_task(until_closed(sockets[0], figures)))
        await asyncio.wait_for(asyncio.gather(*watchers), timeout=WINDOW + GRACEFUL)
        told_after = time.monotonic() - signalled
    code = await asyncio.to_thread(server.wait_exit, WINDOW + GRACEFUL + 5)
    return figures, {
        "refused": refused,
        "still_served": still_served,
        "told_after": told_after,
        "stopped_after": time.monotonic() - signalled,
        "code": code,
    }


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_sigterm_closes_every_websocket_1012_and_ends_every_stream(profile: str, report: Report) -> None:
    env = {
        "APP_WORKERS": "2",
        "APP_ACCESS_LOG": "false",
        "APP_DRAIN_SECONDS": str(WINDOW),
        "APP_GRACEFUL_TIMEOUT": str(GRACEFUL),
    }
    with running_server(profile, env) as server:
        wait_workers(server, 2)
        figures, seen = asyncio.run(asyncio.wait_for(sigterm_with_sessions_open(server), BOUND_SECONDS))
    report.add(
        f"realtime_sigterm[{profile}]",
        websockets_closed_1012=f"{figures.ws_closed_1012}/{SOCKETS}",
        streams_shutdown_event=f"{figures.streams_shutdown}/{STREAMS}",
        **seen,
    )
    refused_upgrade = ("403", None) if profile in NO_DENIAL_RESPONSE else ("503", "1")
    assert seen["refused"] == (503, "1", *refused_upgrade)
    assert seen["still_served"]
    assert (figures.streams_shutdown, figures.streams_other) == (STREAMS, [])
    assert all(RETRY_RANGE_MS[0] <= retry <= RETRY_RANGE_MS[1] for retry in figures.retries)
    assert len(set(figures.retries)) > 1  # jittered: clients do not all come back at once
    assert seen["code"] == 0
    # Told at the start of the graceful stop (after the window), not when the timeout runs out.
    assert float(seen["told_after"]) < WINDOW + GRACEFUL / 2  # type: ignore[arg-type]
    assert (figures.ws_closed_1012, figures.ws_other) == (SOCKETS, [])
