"""The metrics of long-lived connections (WebSockets, server-sent event streams).

How they are counted, and why: a WebSocket session or an event stream lasts as
long as the client wants, so its duration is not a latency. Neither is recorded
in `http_requests_total` or `http_request_duration_seconds` (which stay the
figures of short requests); they have their own series:

- `realtime_sessions_open{kind, route}`: open now, summed over workers;
- `realtime_sessions_ended_total{kind, route, close}`: the WebSocket close code,
  or for a stream how it ended (`client`, `shutdown`);
- `websocket_messages_total{route, direction}` (`in`, `out`);
- `event_stream_events_total{route}`: events delivered.

A refused upgrade or stream (403, 503, 4xx) is an HTTP answer, and counted as one.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge

WEBSOCKET = "websocket"
EVENT_STREAM = "event_stream"

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
def messages_counter(route: str, direction: str) -> Any:
    return WS_MESSAGES.labels(route, direction)


def session_ended(kind: str, route: str, close: str) -> None:
    SESSIONS_ENDED.labels(kind, route, close).inc()


def events_delivered(route: str, count: int) -> None:
    if count:
        STREAM_EVENTS.labels(route).inc(count)
