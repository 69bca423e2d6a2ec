"""The fan-out benchmark's bare side (bench/fanout.py): a bare `FastAPI()` with the rooms' WebSocket
route, written the way the field writes it with redis-py's asyncio client directly.

Same room semantics as the service's `WS /rooms/{room}` (service/api/rooms.py): a member is
subscribed before its handshake completes, every text message it sends is published to the
room, every message of the room (its own included) is sent to it, in Redis's order. The service's
route code cannot run here (it needs the service's broker and session state); what differs is
the plumbing: here each WebSocket holds its own pub/sub connection and Redis does the fan-out,
where the service holds one subscription per worker and fans out in the worker, with a bounded
queue per member. No limits, no drain, no metrics: a lost Redis ends the session with the
server's own close code for an unhandled error.

Its own module: redis-py stays out of the workers of bench/apps.py, whose memory the bench reports.
The broker's URL is the service's setting (`APP_BROKER_URL`), read through `Settings`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from redis.asyncio import Redis

from service.api import root
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


bare_rooms = FastAPI(lifespan=_lifespan)
bare_rooms.include_router(root.router)  # GET /: the bench's readiness probe


@bare_rooms.websocket("/rooms/{room}")
async def _bare_room(websocket: WebSocket, room: str) -> None:
    redis: Redis = websocket.app.state.redis
    channel = CHANNEL_PREFIX + room
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        # Accepted once subscribed, as the service does: a member gets all that is published after it.
        async with asyncio.timeout(SUBSCRIBE_SECONDS):
            while (await pubsub.get_message(timeout=SUBSCRIBE_SECONDS)) is None:
                pass
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
