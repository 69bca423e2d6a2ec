"""What the edge layer (service/middleware/edge.py) records of long-lived connections.

A WebSocket session: its messages in and out, its close code (whoever closed first:
the app's close frame, or the peer's disconnect), and, for an upgrade refused before
`accept`, the HTTP status it got. When it ends: one access line and its metrics
(service/session_metrics.py says how long-lived connections are counted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from service import session_metrics
from service.access_log import AccessLog
from service.multiprocess_metrics import UNMATCHED_ROUTE, request_series

Headers = Iterable[tuple[bytes, bytes]]
ABNORMAL_CLOSURE = 1006  # RFC 6455: ended without a close frame
NO_STATUS = 1005
EVENT_STREAM = b"text/event-stream"


def route_of(scope: Scope) -> str:
    # Starlette's router writes the matched route into this same scope.
    return getattr(scope.get("route"), "path", UNMATCHED_ROUTE)


def is_event_stream(headers: Headers) -> bool:
    # A loop, not any() over a generator (a frame per header): it runs on every response.
    for name, value in headers:  # noqa: SIM110
        if value.startswith(EVENT_STREAM) and name.lower() == b"content-type":
            return True
    return False


def stream_started(scope: Scope, headers: Headers) -> str | None:
    """The route of a response that is an event stream, now counted open; None for any other."""
    if not is_event_stream(headers):
        return None
    route = route_of(scope)
    session_metrics.open_gauge(session_metrics.EVENT_STREAM, route).inc()
    return route


def log_response(access_log: AccessLog, scope: Scope, status: int, seconds: float, version: str) -> None:
    """The HTTP access line, or an event stream's (with the events it sent)."""
    events = scope["state"].get("events_sent")
    if events is None:
        access_log.log(scope, status, seconds, version)
    else:
        access_log.stream(scope, status, seconds, events)


def stream_ended(scope: Scope, route: str) -> None:
    """The metrics of an event stream that has ended (its state is written by the route)."""
    state = scope["state"]
    session_metrics.open_gauge(session_metrics.EVENT_STREAM, route).dec()
    session_metrics.session_ended(session_metrics.EVENT_STREAM, route, state.get("stream_end", "client"))
    session_metrics.events_delivered(route, state.get("events_sent", 0))


class WebSocketSession:
    def __init__(self, scope: Scope, id_header: tuple[bytes, bytes], metrics: bool) -> None:
        self.scope = scope
        self.id_header = id_header
        self.metrics = metrics
        self.route = UNMATCHED_ROUTE
        self.accepted = False
        self.status = 0  # of an upgrade refused with an HTTP answer
        self.close_code: int | None = None
        self.received = 0
        self.sent = 0
        self.messages_in: Any = None
        self.messages_out: Any = None

    def receiving(self, receive: Receive) -> Receive:
        async def receive_counting() -> Message:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                self.received += 1
                if self.messages_in is not None:
                    self.messages_in.inc()
            elif kind == "websocket.disconnect" and self.close_code is None:
                self.close_code = message.get("code", NO_STATUS)
            return message

        return receive_counting

    def sending(self, send: Send, denial_headers: Callable[[Headers], list[tuple[bytes, bytes]]]) -> Send:
        async def send_counting(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                self.sent += 1
                if self.messages_out is not None:
                    self.messages_out.inc()
            elif kind == "websocket.accept":
                message["headers"] = [*message.get("headers", ()), self.id_header]
                self._accepted()
            elif kind == "websocket.close":
                if not self.accepted:
                    self.status = self.status or 403  # every server answers a close before accept so
                elif self.close_code is None:
                    self.close_code = message.get("code", 1000)
            elif kind == "websocket.http.response.start":
                self.status = message["status"]
                message["headers"] = denial_headers(message.get("headers", ()))
            await send(message)

        return send_counting

    def _accepted(self) -> None:
        self.accepted = True
        self.route = route_of(self.scope)
        if self.metrics:
            session_metrics.open_gauge(session_metrics.WEBSOCKET, self.route).inc()
            self.messages_in = session_metrics.messages_counter(self.route, "in")
            self.messages_out = session_metrics.messages_counter(self.route, "out")

    def ended(self, seconds: float, access_log: AccessLog | None) -> None:
        if self.accepted:
            code = self.close_code or ABNORMAL_CLOSURE
            if self.metrics:
                session_metrics.open_gauge(session_metrics.WEBSOCKET, self.route).dec()
                session_metrics.session_ended(session_metrics.WEBSOCKET, self.route, str(code))
            if access_log is not None:
                access_log.websocket(self.scope, code, seconds, self.received, self.sent)
            return
        status = self.status or 403
        if self.metrics:
            request_series("GET", route_of(self.scope), status).observe(seconds)
        if access_log is not None:
            access_log.refused_upgrade(self.scope, status, seconds)
