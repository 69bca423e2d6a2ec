"""uvicorn's httptools protocol with a deadline for the request head.

uvicorn arms its keep-alive timer only after a response, and any received byte
disarms it: a connection that never sends a request, or trickles its headers one
byte at a time, stays open for ever (a slowloris). This protocol gives every
request head `request_head_timeout` seconds, from connection or from the end of
the previous response, whatever arrives meanwhile. Used by the uvicorn profile
and by gunicorn's uvicorn workers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CONFIG_ATTRIBUTE = "request_head_timeout"  # set on uvicorn's Config by the adapters


class HeadTimeoutHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.head_timeout: float | None = getattr(config, CONFIG_ATTRIBUTE, None)
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        if self.head_timeout:
            self.head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_too_slow(self) -> None:
        self.head_deadline = None
        # Never cut a request being handled (a pipelined one may have started meanwhile).
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()
