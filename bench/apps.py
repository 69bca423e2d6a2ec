"""The three apps every profile serves, with the same routes and the same response bytes.

- `service`: the real service (`service.app.create_app`) plus `GET /io`.
- `bare_fastapi`: a bare `FastAPI()` with the same routes and options: what the framework alone costs.
- `raw_asgi`: a hand-written ASGI callable: what the server alone costs.

Servers load them by import string (`APP_ASGI_APP=bench.apps:service`). Hypercorn resolves the
attribute with `eval` over the module's globals, so all three are built eagerly at import.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse

from bench.bare_websocket import websocket_echo
from service.api import echo, root
from service.app import TELEMETRY_OFF, create_app
from service.settings import get_settings

IO_SECONDS = 0.01
GREETING: dict[str, str] = {"message": root.MESSAGE}
IO_ANSWER: dict[str, str] = {"io": "done"}


# `GET /io`: a route of a user's, added as the service takes them (`routers=`).
io_router = APIRouter()


@io_router.get("/io")
async def _io() -> dict[str, str]:
    await asyncio.sleep(IO_SECONDS)
    return IO_ANSWER


# --- (a) the service ---------------------------------------------------------

service = create_app(get_settings(), routers=[io_router])


# --- (b) bare FastAPI ----------------------------------------------------------


# The same route code as the service's own routes (service/api/root.py, echo.py), in the service's
# order (service/app.py: a user's routers, then `GET /` and the demo), and the same framework
# options: FastAPI's native OpenTelemetry off, as the service has it without an OTLP endpoint (left
# on, it looks up the global providers on every request). A ratio measures the stack around the
# routes (the probes and /metrics ahead of them included), not a difference in what the routes or
# the framework do.
bare_fastapi = FastAPI(telemetry=TELEMETRY_OFF)
bare_fastapi.include_router(io_router)
bare_fastapi.include_router(root.router)
bare_fastapi.include_router(echo.router)
bare_fastapi.add_api_websocket_route("/ws", websocket_echo)  # bench/bare_websocket.py


@bare_fastapi.get("/events")
async def _bare_events(interval: float = 1.0) -> StreamingResponse:
    async def ticks() -> AsyncIterator[str]:
        number = 1
        while True:
            yield f"id: {number}\nevent: tick\ndata: {json.dumps({'n': number})}\n\n"
            number += 1
            await asyncio.sleep(interval)

    return StreamingResponse(ticks(), media_type="text/event-stream")


# --- (c) raw ASGI --------------------------------------------------------------

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]


def _json_bytes(document: dict[str, str]) -> bytes:
    # The same bytes FastAPI's JSONResponse renders: compact separators, UTF-8.
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


_GREETING_BYTES = _json_bytes(GREETING)
_IO_BYTES = _json_bytes(IO_ANSWER)
_NOT_FOUND_BYTES = _json_bytes({"detail": "Not Found"})


async def raw_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """GET /, POST /echo (the body sent back as is), GET /io; lifespan acknowledged."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    route = (scope["method"], scope["path"])
    if route == ("GET", "/"):
        body = _GREETING_BYTES
    elif route == ("POST", "/echo"):
        body = await _read_body(receive)
    elif route == ("GET", "/io"):
        await asyncio.sleep(IO_SECONDS)
        body = _IO_BYTES
    else:
        await _respond(send, 404, _NOT_FOUND_BYTES)
        return
    await _respond(send, 200, body)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
