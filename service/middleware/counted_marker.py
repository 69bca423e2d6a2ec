"""Marks the requests the metrics count, when a Host allow-list or CORS sits in front of the app.

The request metrics are recorded in one place, the app's outer layer
(service/middleware/edge.py). What the Host allow-list and CORS answer themselves
(a wrong Host, a preflight) is not the app's traffic: with either of them in the
stack, this layer sits behind them and marks each request that reaches it, and
the outer layer records only marked ones.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

COUNTED = "metrics_counted"  # the key in the request's scope["state"]


class CountedMarker:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[COUNTED] = True
        await self.app(scope, receive, send)
