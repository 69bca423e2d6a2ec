"""Rooms over HTTP: `WS /rooms/{room}`, `GET /rooms/{room}/events`, `POST /rooms/{room}/messages`.

Every text message a WebSocket sends, and every `POST`, goes to every subscriber of the room
(the sender included) on every worker and instance sharing the broker, in the broker's order
(service/brokers.py). The WebSocket limits, Origin check, per-worker cap and drain are those of
`/ws` (service/api/websocket_echo.py). How a session ends, and why (docs/rooms.md):

| why                          | WebSocket close | event stream             |
|------------------------------|-----------------|--------------------------|
| reads slower than its room   | 1008            | `event: too-slow`        |
| broker lost (retry later)    | 1013            | `event: unavailable`     |
| server stopping              | 1012            | `event: shutdown`        |

The event stream has no `Last-Event-ID` resume: pub/sub keeps no history, so its events carry
no `id:` and a reconnected stream starts with the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from service import rooms_metrics
from service.api.event_stream import RETRY_MAX_MS, RETRY_MIN_MS, STREAM_PING_SECONDS, EventStreamResponse
from service.api.websocket_handshake import (
    MESSAGE_TOO_BIG,
    SERVICE_RESTART,
    admitted,
    refuse_upgrade,
    sessions_in,
)
from service.brokers import Broker
from service.room_hub import (
    BROKER_UNAVAILABLE,
    ROOM_NAME,
    ROOM_NAME_RULE,
    TOO_SLOW,
    BrokerUnavailableError,
    Subscriber,
)
from service.session_metrics import EVENT_STREAM, WEBSOCKET

router = APIRouter(tags=["rooms"])
WS_PATH = "/rooms/{room}"
UNSUPPORTED_DATA = 1003  # rooms carry text
# After its close frame, how long a session waits for the peer's; a peer that reads nothing is let go.
CLOSE_GRACE_SECONDS = 5.0
STREAM_ENDINGS = {
    TOO_SLOW: ("too-slow", "too_slow"),
    BROKER_UNAVAILABLE: ("unavailable", "broker_lost"),
    SERVICE_RESTART: ("shutdown", "shutdown"),
}


def broker_of(scope: Scope) -> Broker:
    broker: Broker = scope["app"].state.rooms
    return broker


def room_problem(room: str) -> str | None:
    return None if ROOM_NAME.match(room) else f"Invalid room name: {ROOM_NAME_RULE}"


def unavailable(error: BrokerUnavailableError) -> JSONResponse:
    return JSONResponse({"detail": f"Rooms unavailable: {error}"}, 503, headers={"retry-after": "1"})


@router.websocket(WS_PATH)
async def room_websocket(websocket: WebSocket) -> None:
    """A member of the room: what it sends is published, what the room gets is sent to it."""
    room = websocket.path_params["room"]
    if not await admitted(websocket):
        return
    problem = room_problem(room)
    if problem is not None:
        await refuse_upgrade(websocket, 400, problem)
        return
    broker = broker_of(websocket.scope)
    subscriber = broker.subscriber(room, WEBSOCKET)
    try:
        await broker.join(subscriber)
    except BrokerUnavailableError as error:
        await refuse_upgrade(websocket, 503, f"Rooms unavailable: {error}", retry_after=True)
        return
    realtime = sessions_in(websocket.scope)

    def on_stop() -> None:
        subscriber.end(SERVICE_RESTART)

    realtime.session_started(WEBSOCKET, on_stop)
    try:
        await websocket.accept()
        if realtime.stopping_now:
            subscriber.end(SERVICE_RESTART)
        await _member(websocket, subscriber, broker, realtime.max_message_bytes)
    finally:
        realtime.session_ended(WEBSOCKET, on_stop)
        await broker.leave(subscriber)


async def _member(websocket: WebSocket, subscriber: Subscriber, broker: Broker, limit: int) -> None:
    loop = asyncio.get_running_loop()
    reader = loop.create_task(_publish_what_it_sends(websocket, subscriber, broker, limit))
    writer = loop.create_task(_send_what_the_room_gets(websocket, subscriber))
    ended = loop.create_task(subscriber.ended.wait())
    try:
        done, _ = await asyncio.wait({reader, writer, ended}, return_when=asyncio.FIRST_COMPLETED)
        if reader not in done:  # ended: the writer sends the close frame, the peer answers with its own
            await asyncio.wait({reader}, timeout=CLOSE_GRACE_SECONDS)
    finally:
        # Not awaited: each stops at its next await, sending nothing more (a cancelled task's
        # CancelledError is not suppressed), and the session's end is not held on them.
        for task in (reader, writer, ended):
            task.cancel()


async def _publish_what_it_sends(
    websocket: WebSocket, subscriber: Subscriber, broker: Broker, limit: int
) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if subscriber.end_code is not None:
            continue  # closing: wait for the peer's close frame
        text = message.get("text")
        if text is None:
            subscriber.end(UNSUPPORTED_DATA)
        elif len(text.encode()) > limit:
            subscriber.end(MESSAGE_TOO_BIG)
        else:
            try:
                await broker.publish(subscriber.room, text, "websocket")
            except BrokerUnavailableError:
                subscriber.end(BROKER_UNAVAILABLE)


async def _send_what_the_room_gets(websocket: WebSocket, subscriber: Subscriber) -> None:
    delivered = rooms_metrics.delivered(WEBSOCKET)
    with contextlib.suppress(RuntimeError, OSError):  # the peer may be gone already
        while (message := await subscriber.next_message()) is not None:
            await websocket.send_text(message)
            delivered.inc()
        await websocket.close(subscriber.end_code or 1000)


class RoomStream(EventStreamResponse):
    """`text/event-stream` of a room: `data: {"message": "..."}` per message, a `: ping` comment when idle.

    Ends when the client goes away, or with a last event saying why (the module's table), with a
    jittered `retry:` where coming back makes sense. What it sent and how it ended go into the
    request's state for the access line and the metrics (service/middleware/session_records.py).
    """

    def __init__(self, broker: Broker, subscriber: Subscriber) -> None:
        super().__init__()
        self.broker = broker
        self.subscriber = subscriber

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        realtime = sessions_in(scope)
        subscriber = self.subscriber
        state = scope.setdefault("state", {})
        state["events_sent"] = 0
        state["stream_end"] = "client"

        def on_stop() -> None:
            subscriber.end(SERVICE_RESTART)

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.get_running_loop().create_task(watch_disconnect())
        realtime.session_started(EVENT_STREAM, on_stop)
        try:
            if realtime.stopping_now:
                subscriber.end(SERVICE_RESTART)
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            # A first chunk at once: some servers (gunicorn's ASGI worker) hold the head until one.
            await send(_chunk(": joined\n\n"))
            streamer = asyncio.get_running_loop().create_task(self._stream(send, state))
            await asyncio.wait({streamer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await streamer
        except OSError:
            pass  # the client went away mid-write
        finally:
            realtime.session_ended(EVENT_STREAM, on_stop)
            await self.broker.leave(subscriber)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _stream(self, send: Send, state: dict[str, Any]) -> None:
        subscriber = self.subscriber
        delivered = rooms_metrics.delivered(EVENT_STREAM)
        while True:
            try:
                async with asyncio.timeout(STREAM_PING_SECONDS):
                    message = await subscriber.next_message()
            except TimeoutError:
                await send(_chunk(": ping\n\n"))
                continue
            if message is None:
                break
            await send(_chunk(f"data: {json.dumps({'message': message})}\n\n"))
            state["events_sent"] += 1
            delivered.inc()
        event, end = STREAM_ENDINGS.get(subscriber.end_code or 0, ("closed", "closed"))
        retry = random.randint(RETRY_MIN_MS, RETRY_MAX_MS)  # noqa: S311 - jitter, not a secret
        await send(_chunk(f"event: {event}\nretry: {retry}\ndata: {{}}\n\n"))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        state["stream_end"] = end


def _chunk(text: str) -> dict[str, Any]:
    return {"type": "http.response.body", "body": text.encode(), "more_body": True}


@router.get(
    "/rooms/{room}/events",
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The room's messages."},
        400: {"description": "Invalid room name"},
        503: {"description": "Restarting, or the broker is unavailable: retry after `Retry-After`"},
    },
)
async def room_events(request: Request, room: str) -> Response:
    """The room's messages as server-sent events (read-only; no `Last-Event-ID` resume)."""
    problem = room_problem(room)
    if problem is not None:
        return JSONResponse({"detail": problem}, 400)
    if sessions_in(request.scope).refusing_new():
        return JSONResponse(
            {"detail": "Server is restarting, reconnect shortly"}, 503, headers={"retry-after": "1"}
        )
    broker = broker_of(request.scope)
    subscriber = broker.subscriber(room, EVENT_STREAM)
    try:
        await broker.join(subscriber)
    except BrokerUnavailableError as error:
        return unavailable(error)
    return RoomStream(broker, subscriber)


class RoomMessage(BaseModel):
    message: str


@router.post(
    "/rooms/{room}/messages",
    status_code=202,
    responses={
        400: {"description": "Invalid room name"},
        413: {"description": "Message larger than APP_WS_MAX_MESSAGE_BYTES"},
        503: {"description": "The broker is unavailable: retry after `Retry-After`"},
    },
)
async def post_message(request: Request, room: str, body: RoomMessage) -> JSONResponse:
    """Publish `message` to the room; 202 once the broker has it."""
    problem = room_problem(room)
    if problem is not None:
        return JSONResponse({"detail": problem}, 400)
    limit = sessions_in(request.scope).max_message_bytes
    if len(body.message.encode()) > limit:
        return JSONResponse({"detail": f"Message larger than {limit} bytes"}, 413)
    try:
        await broker_of(request.scope).publish(room, body.message, "http")
    except BrokerUnavailableError as error:
        return unavailable(error)
    return JSONResponse({"status": "accepted"}, 202)
