"""Everything of gunicorn's that is not its public surface, in one place (gunicorn 27).

Both gunicorn profiles otherwise use gunicorn's settings, its server hooks
(deploy/gunicorn_hooks.py), BaseApplication and worker classes by name. Three capabilities
need more, each declared below as a `CarriedPatch` and used only where it `applies()`:

- `STOPPED_WORKER_KILL` (both profiles): `ServiceArbiter`, gunicorn's arbiter whose heartbeat
  check SIGKILLs a stopped worker at its first blow instead of one turn of the loop later.
- `HEAD_DEADLINE` (gunicorn-asgi): `head_timeout_worker()`, gunicorn's ASGI worker whose
  protocol gives every request head APP_REQUEST_HEAD_TIMEOUT seconds (a slowloris defence), and
  (`ASGI_ACCEPT_SETTLE`) whose stop lets a connection accepted an instant before finish its TLS
  handshake, so that it is served rather than cut.
  Its classes are built on first use: the uvicorn-worker profile never loads gunicorn's ASGI
  worker, and a release that moved that worker's modules never reaches their import.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from typing import Any

from gunicorn.arbiter import Arbiter

from deploy.carried import CarriedPatch
from deploy.head_deadline import HeadDeadline
from deploy.lifecycle import is_stopped
from deploy.worker_timing import ACCEPTED_SETTLE_SECONDS

MODULE = "deploy/gunicorn_internals.py"
TESTED = ">=27,<28"

STOPPED_WORKER_KILL = CarriedPatch(
    distribution="gunicorn",
    tested=TESTED,
    capability="a stopped (SIGSTOP) worker SIGKILLed as soon as APP_WORKER_TIMEOUT is up",
    fallback="gunicorn's own heartbeat: SIGABRT, then SIGKILL one turn of its loop (about 1 s) later",
    upstream=(
        "none filed; the change that deletes it: Arbiter.murder_workers sends SIGKILL at once to a "
        "worker in the stopped state, which cannot act on SIGABRT"
    ),
    module=MODULE,
)

HEAD_DEADLINE = CarriedPatch(
    distribution="gunicorn",
    tested=TESTED,
    capability="APP_REQUEST_HEAD_TIMEOUT on gunicorn's ASGI worker (silent or trickling connections closed)",
    fallback=(
        "gunicorn's own `asgi` worker, which sets no deadline before a request head: a silent or "
        "trickling connection stays open"
    ),
    upstream=(
        "none filed (https://github.com/benoitc/gunicorn/pull/3735, open, enforces `keepalive` "
        "between requests only, not before the first); the change that deletes it: a setting of the "
        "ASGI worker that closes a connection whose request head is not complete within it, counted "
        "from connection and from the end of the previous response"
    ),
    module=MODULE,
    settings=("request_head_timeout",),
)


ASGI_ACCEPT_SETTLE = CarriedPatch(
    distribution="gunicorn",
    tested=TESTED,
    capability=(
        "a connection gunicorn's ASGI worker accepted an instant before it stops (its TLS handshake "
        "not done yet) is served, not cut, when workers are replaced"
    ),
    fallback=(
        "gunicorn's ASGI worker waits only for connections whose TLS handshake is done: one still in "
        "it when the worker stops is cut (the client sees EOF in its handshake)"
    ),
    upstream=(
        "none filed; the change that deletes it: ASGIWorker._shutdown counts a connection from its "
        "accept (or waits a moment after closing its listeners) before it waits for connections"
    ),
    module=MODULE,
)


class ServiceArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter; a stopped worker gets SIGKILL with the heartbeat's first blow."""

    def murder_workers(self) -> None:
        super().murder_workers()
        for pid, worker in list(self.WORKERS.items()):
            # gunicorn's first blow is SIGABRT, which a stopped worker leaves pending; its
            # SIGKILL follows one loop later. A stopped worker gets it at once.
            if worker.aborted and is_stopped(pid):
                self.kill_worker(pid, signal.SIGKILL)


def arbiter_class() -> type[Any]:
    """The arbiter to run: ours within the tested releases, gunicorn's own outside them."""
    return ServiceArbiter if STOPPED_WORKER_KILL.applies() else Arbiter


@functools.cache
def head_timeout_worker() -> type[Any]:
    """gunicorn's ASGI worker, serving its connections with a request-head deadline.

    gunicorn 27's ASGI worker arms no timer before a connection's first request: a connection
    that never sends one, or trickles its head one byte at a time, stays open for ever. Every
    request head gets `request_head_timeout` seconds, from connection or from the end of the
    previous response, whatever arrives meanwhile (deploy/head_deadline.py's timer, shared with
    deploy/uvicorn_internals.py). The hooks are gunicorn's protocol methods connection_made, the
    parser's _on_headers_complete, _arm_keepalive_timer (called whenever a connection turns idle
    awaiting its next request) and connection_lost, and the worker's module-level ASGIProtocol.
    """
    from gunicorn.asgi.protocol import ASGIProtocol  # noqa: PLC0415 - only where the patch applies
    from gunicorn.workers import gasgi  # noqa: PLC0415

    class HeadTimeoutASGIProtocol(ASGIProtocol):  # type: ignore[misc]
        def __init__(self, worker: Any) -> None:
            super().__init__(worker)
            # The worker sets its loop up before it serves any connection, and never replaces it.
            self.head_deadline = HeadDeadline(
                getattr(worker, "request_head_timeout", None), worker.loop, self._head_too_slow
            )

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            # Inert on HTTP/2 and uWSGI connections: only HTTP/1 waits for a head (_head_too_slow).
            self.head_deadline.arm()

        def _on_headers_complete(self) -> Any:
            # The parser's callback: once per request, pipelined ones included (the parser holds
            # the bytes behind a complete message until the connection loop re-feeds them).
            self.head_deadline.disarm()
            return super()._on_headers_complete()

        def _arm_keepalive_timer(self) -> None:
            # Called when the connection turns idle awaiting its next head: right after a
            # response, unless a pipelined head is already complete, or once the application
            # calls still running past their response (background tasks) end.
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
                self._keepalive_timeout()  # gunicorn's own idle close: closes, wakes the loop

    class HeadTimeoutASGIWorker(gasgi.ASGIWorker):  # type: ignore[misc]
        protocol = HeadTimeoutASGIProtocol

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # The project's part of the launch, on GunicornApplication (deploy/gunicorn_app.py).
            project = getattr(self.app, "project", None)
            self.request_head_timeout: float | None = getattr(project, "request_head_timeout", None)

        async def _shutdown(self) -> None:
            # ASGIWorker._shutdown closes the listeners, then waits for the connections it counts,
            # which a TLS connection becomes only once its handshake is done: one accepted an
            # instant before would be cut with the loop. Stop accepting first, let such a
            # handshake finish (ASGI_ACCEPT_SETTLE), then gunicorn's own graceful stop.
            if ASGI_ACCEPT_SETTLE.applies():
                for server in self.servers:
                    server.close()
                await asyncio.sleep(ACCEPTED_SETTLE_SECONDS)
            await super()._shutdown()

        def run(self) -> None:
            # ASGIWorker._serve builds each connection's protocol with `lambda: ASGIProtocol(self)`,
            # looking the name up in its module at every connection; gunicorn 27 has no setting
            # for the class. This (forked) process runs this worker only: point the name at ours.
            gasgi.ASGIProtocol = HeadTimeoutASGIProtocol
            super().run()

    return HeadTimeoutASGIWorker
