"""Give every request an id, return it on every response, and log an unhandled error once with it.

An incoming `X-Request-ID` is kept when it is well-formed (a proxy or the caller
already assigned one), so one id follows the request through every hop;
anything else is replaced, never echoed, since it lands in logs and headers.
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"^[A-Za-z0-9._:-]{8,128}$")

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
logger = logging.getLogger("service.errors")


def incoming_or_new(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == HEADER and _WELL_FORMED.match(value):
            return value.decode("ascii")
    return os.urandom(16).hex()  # 128 random bits, as uuid4 minus its object


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_or_new(scope["headers"])
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (HEADER, request_id.encode("ascii"))
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not response_started:
                raise  # the server answers 500 and logs it
            # Starlette re-raises after its 500 has been sent; the client already
            # has its answer, so log it here, once, with the request id.
            logger.exception(
                "unhandled error on %s %s [request_id=%s]", scope["method"], scope["path"], request_id
            )
        finally:
            request_id_var.reset(token)
