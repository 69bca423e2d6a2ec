"""Request metrics, labelled by the route template (not the raw path: bounded cardinality)."""

from __future__ import annotations

import functools
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import DURATION, IN_PROGRESS, REQUESTS, UNMATCHED_ROUTE, method_label


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = method_label(scope["method"])
        status = 500
        started = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_progress = _in_progress(method)
        in_progress.inc()
        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            in_progress.dec()
            # Starlette's router writes the matched route into this same scope.
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            counter, histogram = _series(method, route, status)
            counter.inc()
            histogram.observe(time.perf_counter() - started)


# prometheus-client's .labels() costs a few microseconds per call: look each
# series up once. The label space is bounded (methods, route templates, statuses).
@functools.cache
def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    labels = (method, route, str(status))
    return REQUESTS.labels(*labels), DURATION.labels(*labels)


@functools.cache
def _in_progress(method: str) -> Any:
    return IN_PROGRESS.labels(method)
