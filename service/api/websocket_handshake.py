"""What every WebSocket route checks before `accept` (the handshake, the Origin, the drain, the
per-worker cap), how it refuses, and the close codes the routes share."""

from __future__ import annotations

import base64
import binascii

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.types import Scope

from service.access_log import http_version
from service.sessions import RealtimeState

NONCE_BYTES = 16  # RFC 6455 4.1: Sec-WebSocket-Key is a random 16-byte value, base64-encoded
SERVICE_RESTART = 1012
MESSAGE_TOO_BIG = 1009


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


def sessions_in(scope: Scope) -> RealtimeState:
    """The serving app's long-lived connections (service/sessions.py)."""
    sessions: RealtimeState = scope["app"].state.realtime
    return sessions


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
    realtime = sessions_in(websocket.scope)
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
