"""One access line per request, written by the app so it looks the same on every server.

It sits inside the trusted-proxy and request-id layers, so the client address
is the resolved one and the line carries the request id.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.middleware.request_id import request_id_var

ACCESS_LOGGER = "service.access"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, logger: logging.Logger, skip_paths: frozenset[str]) -> None:
        self.app = app
        self.logger = logger
        self.skip_paths = skip_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            self._log(scope, status or 500, time.perf_counter() - started)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        address = f"{client[0]}:{client[1]}" if client else "-"
        method, path = scope["method"], scope["path"]
        self.logger.info(
            '%s - "%s %s HTTP/%s" %d',
            address,
            method,
            path,
            scope.get("http_version", "1.1"),
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": address,
                "request_id": request_id_var.get(),
            },
        )
