"""What we carry of uvicorn's and uvicorn-worker's internals (deploy/carried.py), for both uvicorn profiles.

One protocol, uvicorn's httptools protocol with two fixes its public options cannot give:

- a deadline for each request head. uvicorn arms its keep-alive timer only after a response,
  and any received byte disarms it: a connection that never sends a request, or trickles its
  headers a byte at a time, stays open for ever (a slowloris). This gives every head
  `request_head_timeout` seconds, from connection or from the end of the previous response.
  The timer is deploy/head_deadline.py's, shared with gunicorn-asgi's protocol.
- the WebSocket scope's real HTTP version: uvicorn writes "1.1" whatever the request said, so
  the app could not refuse an HTTP/1.0 upgrade (service/api/websocket_handshake.py handshake_problem).

Gunicorn's uvicorn workers hand the head deadline to the protocol on their Config, which only
uvicorn-worker's internals reach, and serve with `SettlingServer` (WORKER_ACCEPT_SETTLE), built
where uvicorn-worker's private `_serve` builds uvicorn's. Outside a patch's tested range
`http_protocol()` answers uvicorn's own "httptools", the worker leaves its Config alone and
serves as uvicorn-worker does: the service starts, and the launcher logs one line per
capability not guaranteed.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import uvicorn
from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from deploy.carried import CarriedPatch
from deploy.head_deadline import HeadDeadline
from deploy.worker_timing import ACCEPTED_SETTLE_SECONDS

MODULE = "deploy/uvicorn_internals.py"
CONFIG_ATTRIBUTE = "request_head_timeout"  # ours, set on uvicorn's Config, read by the protocol
# Both protocol patches live in one subclass of HttpToolsProtocol: they apply, or not, together.
PROTOCOL_TESTED = ">=0.54,<0.56"

HEAD_DEADLINE = CarriedPatch(
    distribution="uvicorn",
    tested=PROTOCOL_TESTED,
    capability="a deadline for every request head (APP_REQUEST_HEAD_TIMEOUT, a slowloris defence)",
    fallback=(
        "uvicorn's own httptools protocol runs, whose keep-alive timer only closes a connection "
        "idle after a response: a silent or trickling request head keeps its connection open"
    ),
    upstream=(
        "Kludex/uvicorn#160 (closed; the timer still starts only after a response, and any byte "
        "disarms it). Deleted by a Config option for a request-head timeout, armed at "
        "connection_made and after each response, disarmed at on_headers_complete"
    ),
    module=MODULE,
    settings=("request_head_timeout",),
)

WEBSOCKET_HTTP_VERSION = CarriedPatch(
    distribution="uvicorn",
    tested=PROTOCOL_TESTED,
    capability="the real HTTP version in the WebSocket scope (the app refuses an HTTP/1.0 upgrade)",
    fallback="uvicorn tells the app every upgrade is HTTP/1.1, so an HTTP/1.0 upgrade gets a 101",
    upstream=(
        "none filed. Deleted when httptools_impl's handle_websocket_upgrade passes the request's "
        'own HTTP version on (it writes b" HTTP/1.1" into the bytes it hands the WebSocket '
        "protocol, which would then refuse HTTP/1.0 itself)"
    ),
    module=MODULE,
)

WORKER_HEAD_DEADLINE = CarriedPatch(
    distribution="uvicorn-worker",
    tested=">=0.4,<0.5",
    capability="the request-head deadline in gunicorn's uvicorn workers (APP_REQUEST_HEAD_TIMEOUT)",
    fallback=(
        "the workers' protocol gets no deadline: a silent or trickling request head keeps its "
        "connection open (uvicorn's keep-alive timer runs only after a response)"
    ),
    upstream=(
        "none filed. Deleted by a request-head timeout option of uvicorn's (Kludex/uvicorn#160), "
        "which CONFIG_KWARGS would carry; today only UvicornWorker.config, built in its __init__, "
        "reaches the protocol"
    ),
    module=MODULE,
    settings=("request_head_timeout",),
)

WORKER_ACCEPT_SETTLE = CarriedPatch(
    distribution="uvicorn-worker",
    tested=">=0.4,<0.5",
    capability=(
        "a request on a connection a stopping gunicorn uvicorn worker accepted an instant before "
        "(its first request still on its way) is answered, not cut, when workers are replaced"
    ),
    fallback=(
        "uvicorn's shutdown closes at once every connection with no request in progress: such a "
        "request goes unanswered (the client sees the connection closed without a response)"
    ),
    upstream=(
        "none filed. Deleted by uvicorn's shutdown waiting a moment after closing its listeners for "
        "connections just accepted, or by a server class option of uvicorn-worker; today only "
        "UvicornWorker._serve, private, builds the uvicorn Server"
    ),
    module=MODULE,
)

PROTOCOL_PATCHES = (HEAD_DEADLINE, WEBSOCKET_HTTP_VERSION)
UVICORN_PATCHES = PROTOCOL_PATCHES
GUNICORN_PATCHES = (*PROTOCOL_PATCHES, WORKER_HEAD_DEADLINE, WORKER_ACCEPT_SETTLE)


def http_protocol() -> type[asyncio.Protocol] | str:
    """The `http` of uvicorn's Config: our protocol on a tested release, else uvicorn's own."""
    if all(patch.applies() for patch in PROTOCOL_PATCHES):
        return HeadTimeoutHttpToolsProtocol
    return "httptools"


def give_worker_head_deadline(config: Any, timeout: float) -> None:
    """Put the head deadline on a uvicorn-worker's Config (`UvicornWorker.config`), where tested."""
    if WORKER_HEAD_DEADLINE.applies():
        setattr(config, CONFIG_ATTRIBUTE, timeout)


class SettlingServer(uvicorn.Server):
    """uvicorn's Server, which stops accepting and lets the connections just accepted send their
    first request before its shutdown closes every connection with no request in progress."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for listener in self.servers:
            listener.close()
        await asyncio.sleep(ACCEPTED_SETTLE_SECONDS)
        await super().shutdown(sockets=sockets)


async def serve_settling(worker: Any) -> None:
    """uvicorn-worker's `UvicornWorker._serve` (0.4), serving with `SettlingServer`."""
    worker.config.app = worker.wsgi
    server = SettlingServer(config=worker.config)
    worker._install_sigquit_handler()  # uvicorn-worker's, as its _serve does
    await server.serve(sockets=worker.sockets)
    if not server.started:
        sys.exit(Arbiter.WORKER_BOOT_ERROR)


class HeadTimeoutHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a request-head deadline and the upgrade's real HTTP version."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.head_deadline = HeadDeadline(
            getattr(config, CONFIG_ATTRIBUTE, None), self.loop, self._head_too_slow
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_deadline.arm()

    def on_headers_complete(self) -> None:
        self.head_deadline.disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.head_deadline.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_deadline.disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        version = self.scope["http_version"]  # from httptools' parser (on_headers_complete)
        super().handle_websocket_upgrade()
        # Whichever order uvicorn switches the transport and feeds the request in (0.54: bytes
        # first; 0.55: switch first), on return the WebSocket protocol is the transport's, its
        # scope built and its app task created but not yet run.
        websocket_scope = getattr(self.transport.get_protocol(), "scope", None)
        if websocket_scope is not None:  # None: the WebSocket protocol refused the handshake itself
            websocket_scope["http_version"] = version

    def _head_too_slow(self) -> None:
        # Never cut a request being handled (a pipelined one may have started meanwhile).
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()
