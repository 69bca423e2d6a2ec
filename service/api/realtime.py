"""The long-lived routes: a WebSocket echo (`/ws`) and a server-sent event stream (`/events`).

They stand in for a user's real-time routes and go through everything one would:
the edge layer (request id, trusted proxy, access line, metrics), the drain and the
stop (service/realtime.py), the limits. Both are plain ASGI underneath FastAPI's
routing, so how a session ends (close code, disconnect, shutdown) is ours to see.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import random
from typing import Any

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from service.access_log import http_version
from service.realtime import EVENT_STREAM, WEBSOCKET, RealtimeState

router = APIRouter(tags=["realtime"])
WS_PATH = "/ws"

HEARTBEAT_SECONDS = 15.0  # a comment line this often keeps idle proxies from cutting a slow stream
# A client told to reconnect after a shutdown waits 1-5 s, spread so they do not all come back at once.
RETRY_MIN_MS, RETRY_MAX_MS = 1000, 5000
SERVICE_RESTART = 1012
MESSAGE_TOO_BIG = 1009


NONCE_BYTES = 16  # RFC 6455 4.1: Sec-WebSocket-Key is a random 16-byte value, base64-encoded


def handshake_problem(scope: Scope) -> str | None:
    """What makes an upgrade break RFC 6455 (4.1, 4.2.1) where the server lets it through, or None.

    Over HTTP/2 and HTTP/3 (RFC 8441, 9220) a WebSocket has no key to check.
    """
    version = http_version(scope)
    if version == "1.0":
        return "WebSocket needs HTTP/1.1"
    if version != "1.1":
        return None
    keys = [value for name, value in scope["headers"] if name.lower() == b"sec-websocket-key"]
    if len(keys) != 1 or not _is_nonce(keys[0].strip()):
        return "Sec-WebSocket-Key must be one base64-encoded 16-byte nonce"
    return None


def _is_nonce(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == NONCE_BYTES
    except binascii.Error:
        return False


def realtime_of(scope: Scope) -> RealtimeState:
    state: RealtimeState = scope["app"].state.realtime
    return state


async def refuse_upgrade(websocket: WebSocket, status: int, detail: str, retry_after: bool = False) -> None:
    """Answer the upgrade with an HTTP error where the server can (else: 403, all ASGI allows)."""
    if "websocket.http.response" not in websocket.scope.get("extensions", {}):
        await websocket.close()
        return
    headers = {"retry-after": "1"} if retry_after else None
    await websocket.send_denial_response(JSONResponse({"detail": detail}, status, headers=headers))


async def admitted(websocket: WebSocket) -> bool:
    """What every WebSocket route checks before `accept`: the handshake (RFC 6455), the Origin,
    the drain and the per-worker cap. A refused upgrade is answered here (False)."""
    realtime = realtime_of(websocket.scope)
    problem = handshake_problem(websocket.scope)
    if problem is not None:
        await refuse_upgrade(websocket, 400, problem)
        return False
    if not realtime.origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host")):
        await refuse_upgrade(websocket, 403, "Origin not allowed")
        return False
    if realtime.refusing_new():
        await refuse_upgrade(websocket, 503, "Server is restarting, reconnect shortly", retry_after=True)
        return False
    if realtime.websockets_full():
        await refuse_upgrade(websocket, 503, "Too many open WebSockets, retry shortly", retry_after=True)
        return False
    return True


@router.websocket(WS_PATH)
async def websocket_echo(websocket: WebSocket) -> None:
    """Echo every text message as text and every binary message as binary, until the client closes."""
    if not await admitted(websocket):
        return
    realtime = realtime_of(websocket.scope)
    await websocket.accept()
    limit = realtime.max_message_bytes
    closing = False

    async def close(code: int) -> None:
        nonlocal closing
        if not closing:
            closing = True
            with contextlib.suppress(RuntimeError, OSError):  # the peer may be gone already
                await websocket.close(code)

    closers: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def on_stop() -> None:
        # Scheduled, not awaited: the stop runs outside this session's task.
        task = asyncio.get_running_loop().create_task(close(SERVICE_RESTART))
        closers.add(task)
        task.add_done_callback(closers.discard)

    realtime.session_started(WEBSOCKET, on_stop)
    try:
        if realtime.stopping_now:
            await close(SERVICE_RESTART)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            size = len(data) if data is not None else len(text.encode()) if text is not None else 0
            if size > limit:
                await close(MESSAGE_TOO_BIG)
                continue  # wait for the peer's close frame
            if closing:
                continue
            with contextlib.suppress(RuntimeError, OSError):
                if text is not None:
                    await websocket.send_text(text)
                elif data is not None:
                    await websocket.send_bytes(data)
    finally:
        realtime.session_ended(WEBSOCKET, on_stop)


class EventStreamResponse(Response):
    """A `text/event-stream` response; subclasses write its events in `__call__`."""

    media_type = "text/event-stream"

    def __init__(self) -> None:
        # Not Response.__init__: it would declare the (empty) body's Content-Length.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
        ]


class EventStream(EventStreamResponse):
    """`text/event-stream`: `id: N`, `event: tick`, `data: {"n": N}` every `interval` seconds.

    Ends when the client goes away, or, once the server's graceful stop begins, after a
    final `event: shutdown` with a jittered `retry:`. What it sent and how it ended go
    into the request's state for the access line and the metrics (service/middleware/edge.py).
    """

    def __init__(self, first_id: int, interval: float) -> None:
        super().__init__()
        self.first_id = first_id
        self.interval = interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        realtime = realtime_of(scope)
        state = scope.setdefault("state", {})
        state["events_sent"] = 0
        state["stream_end"] = "client"
        wake = asyncio.Event()
        gone = False

        async def watch_disconnect() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            wake.set()

        watcher = asyncio.get_running_loop().create_task(watch_disconnect())
        realtime.session_started(EVENT_STREAM, wake.set)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._stream(send, realtime, wake, state, lambda: gone)
        except OSError:
            pass  # the client went away mid-write
        finally:
            realtime.session_ended(EVENT_STREAM, wake.set)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _stream(
        self, send: Send, realtime: RealtimeState, wake: asyncio.Event, state: dict[str, Any], gone: Any
    ) -> None:
        loop = asyncio.get_running_loop()
        number = self.first_id
        next_event = loop.time()
        while not gone():
            if realtime.stopping_now:
                retry = random.randint(RETRY_MIN_MS, RETRY_MAX_MS)  # noqa: S311 - jitter, not a secret
                await send(_body(f"event: shutdown\nretry: {retry}\ndata: {{}}\n\n"))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                state["stream_end"] = "shutdown"
                return
            now = loop.time()
            if now >= next_event:
                await send(_body(f"id: {number}\nevent: tick\ndata: {json.dumps({'n': number})}\n\n"))
                state["events_sent"] += 1
                number += 1
                next_event = max(next_event + self.interval, now)  # a late tick is not caught up in a burst
                continue
            wait = min(next_event - now, HEARTBEAT_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()
                continue  # woken: stopping or gone
            if loop.time() < next_event:
                await send(_body(": ping\n\n"))


def _body(text: str) -> dict[str, Any]:
    return {"type": "http.response.body", "body": text.encode(), "more_body": True}


@router.get(
    "/events",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream."}},
)
async def events(
    request: Request,
    interval: float = Query(default=1.0, ge=0.01, le=60.0, description="Seconds between events."),
) -> Response:
    """Server-sent events, resuming after the `Last-Event-ID` the client sends."""
    last = request.headers.get("last-event-id")
    first = 1
    if last is not None:
        if not last.isascii() or not last.isdigit() or len(last) > 18:
            return JSONResponse({"detail": "Last-Event-ID must be a non-negative integer"}, 400)
        first = int(last) + 1
    realtime = realtime_of(request.scope)
    if realtime.refusing_new():
        return JSONResponse(
            {"detail": "Server is restarting, reconnect shortly"}, 503, headers={"retry-after": "1"}
        )
    return EventStream(first, interval)
