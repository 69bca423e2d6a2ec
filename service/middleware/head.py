"""HEAD answered as GET without its body (RFC 9110 9.3.2), on every GET route.

FastAPI's GET routes do not take HEAD (Starlette's plain routes do): `curl -I` and uptime
checkers got 405. Here a HEAD request runs as GET; the status and headers go out as they are
(Content-Length included), the body does not. Once the response is complete the app is told the
client has gone, so a stream (`/events`) ends instead of writing into nothing.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DISCONNECT: Message = {"type": "http.disconnect"}


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = False

        async def receive_until_answered() -> Message:
            return DISCONNECT if answered else await receive()

        async def send_without_body(message: Message) -> None:
            nonlocal answered
            if answered:
                return
            if message["type"] == "http.response.body":
                answered = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive_until_answered, send_without_body)
        finally:
            # The router writes the matched route into the scope it was given; the request metrics
            # read it from this one (service/request_records.py).
            if "route" in as_get:
                scope["route"] = as_get["route"]
