"""The fan-out benchmark's bare side (bench/fanout.py): a bare `FastAPI()` with the rooms' three
routes, written the way the field writes them with redis-py's asyncio client directly.

Same room semantics and bytes as the service's (service/api/rooms.py): a member (`WS /rooms/{room}`)
or a stream (`GET /rooms/{room}/events`, `data: {"message": ...}` per message, `: joined` once
subscribed) is subscribed before it hears anything, every text message a member sends is published
to the room, every message of the room (its own included) reaches it, in Redis's order;
`POST /rooms/{room}/messages` publishes and answers 202. The service's route code cannot run here
(it needs the service's broker and session state); what differs is the plumbing: here each session
holds its own pub/sub connection and Redis does the fan-out, where the service holds one
subscription per worker and fans out in the worker, with a bounded queue per member. No limits,
no drain, no metrics: a lost Redis ends the session with the server's own close code for an
unhandled error.

Its own module: redis-py stays out of the workers of bench/apps.py, whose memory the bench reports.
The broker's URL is the service's setting (`APP_BROKER_URL`), read through `Settings`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from service.api import root
from service.app import TELEMETRY_OFF
from service.settings import get_settings

# Not the service's prefix: both apps share one Redis, and their rooms must not meet.
CHANNEL_PREFIX = "bench-bare:rooms:"
SUBSCRIBE_SECONDS = 5.0


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = Redis.from_url(get_settings().broker_url or "redis://127.0.0.1", decode_responses=True)
    try:
        yield
    finally:
        await app.state.redis.aclose()


bare_rooms = FastAPI(lifespan=_lifespan, telemetry=TELEMETRY_OFF)  # as the service (bench/apps.py)
bare_rooms.include_router(root.router)  # GET /: the bench's readiness probe


@bare_rooms.websocket("/rooms/{room}")
async def _bare_room(websocket: WebSocket, room: str) -> None:
    redis: Redis = websocket.app.state.redis
    channel = CHANNEL_PREFIX + room
    async with redis.pubsub() as pubsub:
        # Accepted once subscribed, as the service does: a member gets all that is published after it.
        await _subscribed(pubsub, channel)
        await websocket.accept()

        async def forward() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    await websocket.send_text(message["data"])

        async def publish() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await redis.publish(channel, message["text"])

        tasks = {asyncio.create_task(forward()), asyncio.create_task(publish())}
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()  # a lost Redis raises here: the server closes the session as an error


async def _subscribed(pubsub: PubSub, channel: str) -> None:
    await pubsub.subscribe(channel)
    async with asyncio.timeout(SUBSCRIBE_SECONDS):
        while (await pubsub.get_message(timeout=SUBSCRIBE_SECONDS)) is None:
            pass


@bare_rooms.get("/rooms/{room}/events")
async def _bare_room_events(request: Request, room: str) -> StreamingResponse:
    redis: Redis = request.app.state.redis
    pubsub = redis.pubsub()
    await _subscribed(pubsub, CHANNEL_PREFIX + room)

    async def events() -> AsyncIterator[str]:
        try:
            yield ": joined\n\n"
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield f"data: {json.dumps({'message': message['data']})}\n\n"
        finally:
            await pubsub.aclose()

    return StreamingResponse(events(), media_type="text/event-stream")


class _RoomMessage(BaseModel):
    message: str


@bare_rooms.post("/rooms/{room}/messages", status_code=202)
async def _bare_post(request: Request, room: str, body: _RoomMessage) -> JSONResponse:
    redis: Redis = request.app.state.redis
    await redis.publish(CHANNEL_PREFIX + room, body.message)
    return JSONResponse({"status": "accepted"}, 202)
