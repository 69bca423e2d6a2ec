"""Per-worker request limits, identical on every server.

- Bodies larger than `max_body_size` get 413: at once when Content-Length says
  so, or as soon as a streamed (chunked) body, or any HTTP/2 or HTTP/3 body,
  crosses the limit while the app reads it; the rest is never buffered.
- Headers larger in total than `max_header_bytes`, or more than
  `max_header_count` of them, get 431. Some servers stop such requests earlier
  with their own 400/431; httptools-based ones (uvicorn, gunicorn+uvicorn) and
  granian have no such limit, so the app enforces one for every profile.
- More than `max_concurrency` requests in flight in this worker get an immediate
  503 with `Retry-After`, instead of an unbounded queue. The probes are exempt:
  an overloaded worker is alive, and restarting it would make things worse.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.health import PROBE_PATHS

HTTP1 = frozenset({"1.0", "1.1", "1"})  # as ASGI spells them, and granian 2.8's "1" for 1.0


class LimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_size: int,
        max_concurrency: int,
        max_header_bytes: int = 32_768,
        max_header_count: int = 100,
    ) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.max_concurrency = max_concurrency
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        over_limit = self.max_concurrency and self.in_flight >= self.max_concurrency
        if over_limit and scope["path"] not in PROBE_PATHS:
            await reply(send, 503, "Server busy, retry shortly", [(b"retry-after", b"1")])
            return
        headers = scope["headers"]
        if len(headers) > self.max_header_count:
            await reply(send, 431, f"More than {self.max_header_count} request headers")
            return
        # One pass over the headers: their size, the first Content-Length and how many there are,
        # any Transfer-Encoding.
        size = 0
        length = None
        lengths = 0
        chunked = False
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"content-length":
                lengths += 1
                if length is None:
                    length = value
            elif name == b"transfer-encoding":
                chunked = True
        if size > self.max_header_bytes:
            await reply(send, 431, f"Request headers larger than {self.max_header_bytes} bytes")
            return
        if length is not None and _declared(length) > self.max_body_size:
            await reply(send, 413, f"Request body larger than {self.max_body_size} bytes")
            return
        # An HTTP/1.x server reads exactly the Content-Length it was given, no byte more, and no body
        # without one or a Transfer-Encoding (RFC 9112 6.3; the framing is the server's): such a body
        # needs no counting. Everything else is counted as it arrives: a chunked body, several
        # lengths (which one would the server use?), and HTTP/2 and 3, where a length is a claim.
        framed = (
            not chunked
            and (length is None or (lengths == 1 and length.isdigit()))
            and scope.get("http_version") in HTTP1
        )
        self.in_flight += 1
        try:
            await self.app(scope, receive if framed else self._bounded(receive), send)
        finally:
            self.in_flight -= 1

    def _bounded(self, receive: Receive) -> Receive:
        received = 0
        limit = self.max_body_size

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app: Starlette's exception middleware turns it into a JSON 413.
                    raise HTTPException(413, f"Request body larger than {limit} bytes")
            return message

        return bounded_receive


def _declared(length: bytes) -> int:
    try:
        return int(length)
    except ValueError:
        return 0  # the server itself rejects a malformed length


async def reply(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
