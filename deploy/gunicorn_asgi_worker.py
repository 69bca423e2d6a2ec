"""gunicorn's own ASGI worker (`-k asgi`) with a deadline for the request head.

gunicorn 27's ASGI worker arms no timer before a connection's first request: a
connection that never sends one, or trickles its request head one byte at a
time, stays open for ever (a slowloris). This worker's protocol gives every
request head `request_head_timeout` seconds, from connection or from the end of
the previous response, whatever arrives meanwhile: what deploy/uvicorn_internals.py
does for uvicorn. Used by the gunicorn-asgi profile (deploy/gunicorn_asgi.py).

The hooks are gunicorn's (27.0.1) protocol methods: connection_made, the parser's
on_headers_complete callback, _arm_keepalive_timer (called whenever a connection
turns idle awaiting its next request) and connection_lost. The timer itself is
deploy/head_deadline.py's, shared with the uvicorn protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers import gasgi

from deploy.head_deadline import HeadDeadline
from service.versions import require

require("gunicorn", ">=27,<28", "deploy/gunicorn_asgi_worker.py (ASGIProtocol internals)")

# Key of the head timeout in GunicornApplication's worker_overrides (deploy/gunicorn_asgi.py).
WORKER_SETTING = "request_head_timeout"


class HeadTimeoutASGIProtocol(ASGIProtocol):  # type: ignore[misc]
    """gunicorn's ASGI protocol; a request head not complete in time closes an idle connection."""

    def __init__(self, worker: Any) -> None:
        super().__init__(worker)
        # The worker sets its loop up before it serves any connection, and never replaces it.
        self.head_deadline = HeadDeadline(
            getattr(worker, WORKER_SETTING, None), worker.loop, self._head_too_slow
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Inert on HTTP/2 and uWSGI connections: only HTTP/1 waits for a head (see _head_too_slow).
        self.head_deadline.arm()

    def _on_headers_complete(self) -> Any:
        # The parser's callback: fires once per request, pipelined ones included (the parser
        # holds the bytes behind a complete message until the connection loop re-feeds them).
        self.head_deadline.disarm()
        return super()._on_headers_complete()

    def _arm_keepalive_timer(self) -> None:
        # gunicorn calls it when the connection turns idle awaiting its next head: right after a
        # response, unless a pipelined head is already complete, or once the application calls
        # still running past their response (background tasks) end.
        super()._arm_keepalive_timer()
        self.head_deadline.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_deadline.disarm()
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        # Close only a connection whose loop waits for a head not yet complete, with no
        # application call left running on it: never cut a request being handled.
        if (
            self._awaiting_request
            and not self._request_ready.is_set()
            and not self._finishing_calls
            and not self._closed
        ):
            self._keepalive_timeout()  # gunicorn's own idle close: closes, wakes the connection loop


class HeadTimeoutASGIWorker(gasgi.ASGIWorker):  # type: ignore[misc]
    """gunicorn's ASGI worker, serving its connections with HeadTimeoutASGIProtocol."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        overrides = getattr(self.app, "worker_overrides", None) or {}  # set by GunicornApplication
        self.request_head_timeout: float | None = overrides.get(WORKER_SETTING)

    def run(self) -> None:
        # ASGIWorker._serve builds each connection's protocol with `lambda: ASGIProtocol(self)`,
        # looking the name up in its module at every connection; gunicorn 27 has no setting
        # for the class. This (forked) process runs this worker only: point the name at ours.
        gasgi.ASGIProtocol = HeadTimeoutASGIProtocol
        super().run()
