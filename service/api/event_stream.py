"""`/events`: a server-sent event stream, standing in for a user's dashboard feed, and the
event-stream response the rooms' stream shares.

Like `/ws` it goes through the edge layer, the drain and the stop (service/sessions.py) and the
limits, as plain ASGI underneath FastAPI's routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from service.api.websocket_handshake import sessions_in
from service.session_metrics import EVENT_STREAM
from service.sessions import RealtimeState

router = APIRouter(tags=["realtime"])

STREAM_PING_SECONDS = 15.0  # a comment line this often keeps idle proxies from cutting a slow stream
TIMER_SLACK = 0.001  # uvloop's timers count whole milliseconds: one may fire up to 1 ms early
# A client told to reconnect after a shutdown waits 1-5 s, spread so they do not all come back at once.
RETRY_MIN_MS, RETRY_MAX_MS = 1000, 5000


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
        realtime = sessions_in(scope)
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
        next_event = last_write = loop.time()
        while not gone():
            if realtime.stopping_now:
                retry = random.randint(RETRY_MIN_MS, RETRY_MAX_MS)  # noqa: S311 - jitter, not a secret
                await send(_body(f"event: shutdown\nretry: {retry}\ndata: {{}}\n\n"))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                state["stream_end"] = "shutdown"
                return
            # The loop's timers may fire up to TIMER_SLACK early: such a wake is the tick it was for.
            now = loop.time() + TIMER_SLACK
            if now >= next_event:
                await send(_body(f"id: {number}\nevent: tick\ndata: {json.dumps({'n': number})}\n\n"))
                state["events_sent"] += 1
                number += 1
                next_event = max(next_event + self.interval, now)  # a late tick is not caught up in a burst
                last_write = now
                continue
            if now >= last_write + STREAM_PING_SECONDS:  # nothing written for that long: a ping
                await send(_body(": ping\n\n"))
                last_write = now
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(next_event, last_write + STREAM_PING_SECONDS) - now):
                    await wake.wait()  # set when stopping or gone


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
    realtime = sessions_in(request.scope)
    if realtime.refusing_new():
        return JSONResponse(
            {"detail": "Server is restarting, reconnect shortly"}, 503, headers={"retry-after": "1"}
        )
    return EventStream(first, interval)
