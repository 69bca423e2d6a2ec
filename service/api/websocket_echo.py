"""`/ws`: a WebSocket echo, standing in for a user's real-time route.

It goes through everything one would: the edge layer (request id, trusted proxy, access line,
metrics), the drain and the stop (service/sessions.py), the limits. It is plain ASGI underneath
FastAPI's routing, so how a session ends (close code, disconnect, shutdown) is ours to see.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket

from service.api.websocket_handshake import MESSAGE_TOO_BIG, SERVICE_RESTART, admitted, sessions_in
from service.session_metrics import WEBSOCKET

router = APIRouter(tags=["realtime"])
WS_PATH = "/ws"


@router.websocket(WS_PATH)
async def websocket_echo(websocket: WebSocket) -> None:
    """Echo every text message as text and every binary message as binary, until the client closes."""
    if not await admitted(websocket):
        return
    realtime = sessions_in(websocket.scope)
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
            # A try, not contextlib.suppress: it costs nothing until something is raised, and this
            # runs for every message.
            try:
                if text is not None:
                    await websocket.send_text(text)
                elif data is not None:
                    await websocket.send_bytes(data)
            except (RuntimeError, OSError):  # the peer may be gone already
                pass
    finally:
        realtime.session_ended(WEBSOCKET, on_stop)
