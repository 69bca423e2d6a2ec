"""The metrics of long-lived connections (WebSockets, server-sent event streams).

How they are counted, and why: a WebSocket session or an event stream lasts as
long as the client wants, so its duration is not a latency. Neither is recorded
in `http_requests_total` or `http_request_duration_seconds` (which stay the
figures of short requests); they have their own series:

- `realtime_sessions_open{kind, route}`: open now, summed over workers;
- `realtime_sessions_ended_total{kind, route, close}`: the WebSocket close code,
  or for a stream how it ended (`client`, `shutdown`);
- `websocket_messages_total{route, direction}` (`in`, `out`), added up in memory and written
  once per event-loop iteration, as the request metrics are;
- `event_stream_events_total{route}`: events delivered.

A refused upgrade or stream (403, 503, 4xx) is an HTTP answer, and counted as one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from fastapi.routing import APIRoute
from prometheus_client import Counter, Gauge
from starlette.routing import BaseRoute, WebSocketRoute

from service.multiprocess_metrics import BatchedCounter

WEBSOCKET = "websocket"
EVENT_STREAM = "event_stream"
EVENT_STREAM_TYPE = "text/event-stream"

SESSIONS_OPEN = Gauge(
    "realtime_sessions_open",
    "WebSocket sessions and event streams open now.",
    ("kind", "route"),
    multiprocess_mode="livesum",
)
SESSIONS_ENDED = Counter(
    "realtime_sessions_ended",
    "WebSocket sessions and event streams ended, by close code (WebSocket) or end (stream).",
    ("kind", "route", "close"),
)
WS_MESSAGES = Counter(
    "websocket_messages", "WebSocket messages received (in) and sent (out).", ("route", "direction")
)
STREAM_EVENTS = Counter("event_stream_events", "Server-sent events delivered.", ("route",))


@functools.cache
def open_gauge(kind: str, route: str) -> Any:
    return SESSIONS_OPEN.labels(kind, route)


@functools.cache
def messages_counter(route: str, direction: str) -> BatchedCounter:
    """Counted per message: written once per event-loop iteration (service/multiprocess_metrics.py)."""
    return BatchedCounter(WS_MESSAGES.labels(route, direction))


def declare_open_sessions(routes: Iterable[BaseRoute]) -> None:
    """Export 0 open sessions for each long-lived route, so a worker shows them before its first.

    Without it a worker started after a crash has no series until a client connects, and a
    dashboard panel or a rule reads "no data" where the truth is 0. A WebSocket route is known
    by its class; an event stream by the `text/event-stream` answer its OpenAPI entry declares.
    A router nested in an included router is not walked: its sessions show from the first one.
    """
    for route in routes:
        if isinstance(route, WebSocketRoute):
            open_gauge(WEBSOCKET, route.path)
        elif isinstance(route, APIRoute) and EVENT_STREAM_TYPE in _answers(route, 200):
            open_gauge(EVENT_STREAM, route.path)


def _answers(route: APIRoute, status: int) -> dict[str, Any]:
    """The media types a route declares for `status` in its OpenAPI entry."""
    content: dict[str, Any] = route.responses.get(status, {}).get("content", {})
    return content


def session_ended(kind: str, route: str, close: str) -> None:
    SESSIONS_ENDED.labels(kind, route, close).inc()


def events_delivered(route: str, count: int) -> None:
    if count:
        STREAM_EVENTS.labels(route).inc(count)
