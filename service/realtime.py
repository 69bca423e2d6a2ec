"""Long-lived connections (WebSockets, server-sent event streams): their metrics and per-worker state.

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
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

from service.drain import DrainState

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


class RealtimeState:
    """This worker's long-lived connections, and whether new ones are still welcome.

    While the drain window is open, and once the graceful stop has begun, new
    upgrades and streams get 503 with `Retry-After` (open ones carry on). When the
    stop begins (`begin_stop`), every open session's stop callback runs: a
    WebSocket closes with 1012, a stream sends `event: shutdown` and ends.
    """

    def __init__(
        self,
        drain: DrainState,
        max_message_bytes: int,
        max_websockets: int,
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        self.drain = drain
        self.any_origin = "*" in allowed_origins
        self.allowed_origins = frozenset(origin.lower() for origin in allowed_origins)
        self.max_message_bytes = max_message_bytes
        self.max_websockets = max_websockets
        self.open_websockets = 0
        self.open_streams = 0
        self.stopping_now = False
        self.stop_callbacks: set[Callable[[], None]] = set()

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """A browser's upgrade from another site is refused (cross-site WebSocket hijacking).

        No Origin: not a browser, nothing to hijack. Otherwise the allow-list, or with
        none, the service's own origin: the Origin's host[:port] is the Host header.
        """
        if origin is None or self.any_origin:
            return True
        origin = origin.lower()
        if self.allowed_origins:
            return origin in self.allowed_origins
        _, _, authority = origin.partition("://")
        return bool(authority) and host is not None and authority == host.lower()

    def refusing_new(self) -> bool:
        return self.drain.draining or self.stopping_now

    def websockets_full(self) -> bool:
        return bool(self.max_websockets) and self.open_websockets >= self.max_websockets

    def begin_stop(self) -> None:
        if self.stopping_now:
            return
        self.stopping_now = True
        for callback in list(self.stop_callbacks):
            callback()
