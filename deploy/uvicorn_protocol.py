"""uvicorn's httptools protocol with a deadline for the request head.

uvicorn arms its keep-alive timer only after a response, and any received byte
disarms it: a connection that never sends a request, or trickles its headers one
byte at a time, stays open for ever (a slowloris). This protocol gives every
request head `request_head_timeout` seconds, from connection or from the end of
the previous response, whatever arrives meanwhile. Used by the uvicorn profile
and by gunicorn's uvicorn workers. The timer itself is deploy/head_deadline.py's,
shared with the gunicorn-asgi protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from deploy.head_deadline import HeadDeadline
from service.versions import require

require(
    "uvicorn",
    ">=0.54,<0.55",
    "deploy/uvicorn_protocol.py (HttpToolsProtocol internals; the WebSocket protocol it hands an"
    " upgrade to builds its scope while taking the request, and the app task reads it later)",
)

CONFIG_ATTRIBUTE = "request_head_timeout"  # set on uvicorn's Config by the adapters


class HeadTimeoutHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.head_deadline = HeadDeadline(
            getattr(config, CONFIG_ATTRIBUTE, None), self.loop, self._head_too_slow
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_deadline.arm()

    def on_headers_complete(self) -> None:
        self.head_deadline.disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.head_deadline.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_deadline.disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        version = self.scope["http_version"]  # from httptools' parser (on_headers_complete)
        super().handle_websocket_upgrade()
        # The WebSocket protocol is now the transport's, its scope built and its app task not yet run.
        websocket_scope = getattr(self.transport.get_protocol(), "scope", None)
        if websocket_scope is not None:  # None: the WebSocket protocol refused the handshake itself
            websocket_scope["http_version"] = version

    def _head_too_slow(self) -> None:
        # Never cut a request being handled (a pipelined one may have started meanwhile).
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()
