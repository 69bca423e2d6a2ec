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
