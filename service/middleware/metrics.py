"""Request metrics, labelled by the route template (not the raw path: bounded cardinality).

Its own layer only when a Host allow-list or CORS sits between it and the app's
outer layer (service/middleware/edge.py), which records them itself otherwise.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import UNMATCHED_ROUTE, in_progress, method_label, request_series
from service.middleware.websocket_session import is_event_stream


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = method_label(scope["method"])
        status = 500
        stream = False

        async def send_recording_status(message: Message) -> None:
            nonlocal status, stream
            if message["type"] == "http.response.start":
                status = message["status"]
                stream = status == 200 and is_event_stream(message.get("headers", ()))
            await send(message)

        in_flight = in_progress(method)
        in_flight.enter()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            in_flight.leave()
            # Starlette's router writes the matched route into this same scope.
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            if not stream:  # an event stream is counted as one (service/realtime.py), not as a latency
                request_series(method, route, status).observe(time.perf_counter() - started)
