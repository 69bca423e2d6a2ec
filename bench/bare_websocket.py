"""Bare FastAPI's WebSocket echo: what the framework alone does per message, for both benches.

Served by `bench.apps:bare_fastapi` under load and called in-process by bench/inprocess.py, so both
compare the service's `/ws` (service/api/websocket_echo.py) with the same code.
"""

from __future__ import annotations

from fastapi import WebSocket


async def websocket_echo(websocket: WebSocket) -> None:
    """Every text message back as text, every binary message as binary, until the client closes."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"])
