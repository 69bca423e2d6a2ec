"""The app's outer layer: what every request and every response gets, in one pure-ASGI layer.

- The client address and scheme from `X-Forwarded-For`/`-Proto`, when the peer is
  a trusted proxy (service/forwarded.py); first, so everything after
  sees the real client and scheme (the access line, HSTS). Websockets get it too.
- A request id (service/request_id.py): set in the context and in
  `request.state`, returned in `X-Request-ID`; an error raised once the response
  has started is logged here, once, with it.
- The access line (service/access_log.py), when access logging is on.
- `Connection: close` on every HTTP/1.x response while the drain window is open
  (service/drain_flag.py): the request is served, the client moves off. HTTP/2 and
  HTTP/3 forbid connection-specific fields (RFC 9113 8.2.2, RFC 9114 4.2: a client
  treats the response as malformed); there a `Connection` header is dropped, and the
  server's GOAWAY moves the client off.
- The security headers (service/security_headers.py).
- The request metrics, when `metrics` is set; what a Host allow-list or CORS answer
  themselves is not counted (service/middleware/counted_marker.py).
- The access line and the metrics of a finished request are kept as one record and
  written with the others of the event-loop iteration at its end
  (service/request_records.py); an event stream's when it ends.

One layer rather than one per concern: a response's headers are rebuilt once, in one
pass, and its status is read once (each layer would wrap `send` again).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.access_log import AccessLog, http_version
from service.drain_flag import DrainState
from service.forwarded import TrustedProxies
from service.middleware.session_records import (
    WebSocketSession,
    log_response,
    stream_ended,
    stream_started,
)
from service.multiprocess_metrics import in_progress, method_label
from service.request_id import HEADER, incoming_or_new, logger, request_id_var
from service.request_records import RequestRecords
from service.security_headers import ALWAYS, HSTS, JSON_CSP

CLOSE = (b"connection", b"close")
HTTP1_VERSIONS = ("1.0", "1.1")  # the versions with connection-specific header fields


def response_headers(
    headers: Iterable[tuple[bytes, bytes]],
    over_tls: bool,
    closing: bool,
    id_header: tuple[bytes, bytes],
    http1: bool = True,
) -> list[tuple[bytes, bytes]]:
    """The app's headers, then the security headers, `Connection: close` while draining (HTTP/1.x
    only, as any `Connection` header), the request id."""
    kept = []
    json = None
    closing = closing and http1
    for header in headers:
        name = header[0].lower()
        if name == b"server" or (name == b"connection" and (closing or not http1)):
            continue
        if json is None and name == b"content-type":
            json = header[1].startswith(b"application/json")
        kept.append(header)
    kept += ALWAYS
    if json:
        kept.append(JSON_CSP)
    if over_tls:
        kept.append(HSTS)
    if closing:
        kept.append(CLOSE)
    kept.append(id_header)
    return kept


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        drain: DrainState,
        access_log: AccessLog | None = None,
        *,
        trusted_proxies: TrustedProxies,
        metrics: bool = False,
        count_marked_only: bool = False,
    ) -> None:
        self.app = app
        self.drain = drain
        self.trusted_proxies = trusted_proxies
        self.access_log = access_log
        self.metrics = metrics
        # Every finished request but an event stream: its metrics and access line, written once per
        # event-loop iteration.
        self.records = (
            RequestRecords(access_log, metrics=metrics, count_marked_only=count_marked_only)
            if metrics or access_log is not None
            else None
        )

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket session: request id, trusted proxy, one access line and its metrics when it ends."""
        self.trusted_proxies.apply(scope)
        request_id = incoming_or_new(scope["headers"])
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        session = WebSocketSession(scope, (HEADER, request_id.encode("ascii")), self.metrics)

        def denial_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
            return response_headers(headers, False, self.drain.draining, session.id_header)

        started = time.perf_counter()
        try:
            await self.app(scope, session.receiving(receive), session.sending(send, denial_headers))
        except Exception:
            logger.exception("unhandled error on websocket %s [request_id=%s]", scope["path"], request_id)
            if not session.accepted and not session.status:
                session.status = 500
                raise  # the server refuses the handshake
            session.close_code = session.close_code or 1011
        finally:
            session.ended(time.perf_counter() - started, self.access_log)
            request_id_var.reset(token)

    def _stream_ended(self, scope: Scope, route: str, status: int, seconds: float, version: str) -> None:
        """An event stream's metrics and access line, once it has ended (it is never batched)."""
        in_progress(method_label(scope["method"])).leave()
        stream_ended(scope, route)
        if self.access_log is not None and scope["path"] not in self.access_log.skip_paths:
            log_response(self.access_log, scope, status, seconds, version)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await (self.websocket if scope["type"] == "websocket" else self.app)(scope, receive, send)
            return
        self.trusted_proxies.apply(scope)
        request_id = incoming_or_new(scope["headers"])
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (HEADER, request_id.encode("ascii"))
        over_tls = scope.get("scheme") == "https"
        version = http_version(scope)
        http1 = version in HTTP1_VERSIONS
        # As before: a request that started before the drain window opened is answered without it.
        closing = self.drain.draining
        status = 0
        stream_route = None  # set when the response is an event stream (service/sessions.py)

        async def send_with_headers(message: Message) -> None:
            nonlocal status, stream_route
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                message["headers"] = response_headers(headers, over_tls, closing, id_header, http1)
                if status == 200 and self.metrics:
                    stream_route = stream_started(scope, headers)
            await send(message)

        records = self.records
        if self.metrics:
            in_progress(method_label(scope["method"])).enter()
        started = time.perf_counter()
        try:
            try:
                await self.app(scope, receive, send_with_headers)
            finally:
                seconds = time.perf_counter() - started
                if stream_route is not None:  # a stream's lifetime is not a latency (service/sessions.py)
                    self._stream_ended(scope, stream_route, status, seconds, version)
                elif records is not None:
                    records.add((scope, status or 500, seconds, version, time.time()))
        except Exception:
            if not status:
                raise  # no response yet: the server answers 500 and logs it
            # Starlette re-raises after its 500 has been sent; the client already
            # has its answer, so log it here, once, with the request id.
            logger.exception(
                "unhandled error on %s %s [request_id=%s]", scope["method"], scope["path"], request_id
            )
        finally:
            request_id_var.reset(token)
