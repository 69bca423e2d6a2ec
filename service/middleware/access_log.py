"""One access line per request, written by the app so it looks the same on every server.

Written by the app's outer layer (service/middleware/edge.py), inside the
trusted-proxy resolution and once the request has its id, so the client
address is the resolved one and the line carries the request id.
"""

from __future__ import annotations

import logging

from starlette.types import Scope

from service.middleware.request_id import request_id_var

ACCESS_LOGGER = "service.access"


class AccessLog:
    def __init__(self, logger: logging.Logger, skip_paths: frozenset[str]) -> None:
        self.logger = logger
        self.skip_paths = skip_paths

    def log(self, scope: Scope, status: int, seconds: float) -> None:
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

    # Long-lived connections (service/realtime.py): one line when each ends, same fields plus its own.

    def websocket(self, scope: Scope, close_code: int, seconds: float, received: int, sent: int) -> None:
        """A WebSocket session that was accepted, once it has ended."""
        if not self.logger.isEnabledFor(logging.INFO) or scope["path"] in self.skip_paths:
            return
        address = _address(scope)
        path = scope["path"]
        self.logger.info(
            '%s - "WEBSOCKET %s" %d %d in %d out',
            address,
            path,
            close_code,
            received,
            sent,
            extra={
                "method": "WEBSOCKET",
                "path": path,
                "close_code": close_code,
                "duration_ms": round(seconds * 1000, 3),
                "messages_in": received,
                "messages_out": sent,
                "client": address,
                "request_id": request_id_var.get(),
            },
        )

    def refused_upgrade(self, scope: Scope, status: int, seconds: float) -> None:
        """A WebSocket upgrade answered with an HTTP status instead (403, 503, ...)."""
        if not self.logger.isEnabledFor(logging.INFO) or scope["path"] in self.skip_paths:
            return
        address = _address(scope)
        path = scope["path"]
        self.logger.info(
            '%s - "GET %s HTTP/%s" %d (websocket upgrade refused)',
            address,
            path,
            scope.get("http_version", "1.1"),
            status,
            extra={
                "method": "GET",
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": address,
                "request_id": request_id_var.get(),
            },
        )

    def stream(self, scope: Scope, status: int, seconds: float, events: int) -> None:
        """An event stream, once it has ended: the HTTP line's fields plus the events sent."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        address = _address(scope)
        method, path = scope["method"], scope["path"]
        self.logger.info(
            '%s - "%s %s HTTP/%s" %d %d events',
            address,
            method,
            path,
            scope.get("http_version", "1.1"),
            status,
            events,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "events_sent": events,
                "client": address,
                "request_id": request_id_var.get(),
            },
        )


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"
