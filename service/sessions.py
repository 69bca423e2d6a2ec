"""This worker's long-lived connections (WebSockets, server-sent event streams): the registry
their routes join and leave, and the one way to tell them all that the graceful stop has begun.

The stop begins differently on each server, and reaches this registry in two ways:
- by a signal to the worker (SIGTERM from gunicorn's arbiter and granian's main process,
  SIGTERM/SIGINT to a lone uvicorn or hypercorn process). Each server has installed its own
  handler before the app starts; `attach` chains onto it, never replacing it (a loop's
  handler, asyncio's or uvloop's, is woken through the wakeup fd whatever Python handler
  runs). The server's handler still runs, right after.
- by the adapter, where deploy/supervisor.py stops a worker with an event, not a signal
  (uvicorn and hypercorn with several workers): `begin_stop_of(app)`, on the worker's loop;
  on granian, whose worker drops open WebSockets once its own stop begins, the adapter's
  handler holds granian's stop back until `stop_and_wait` returns.
The registry is the app's (`app.state.realtime`), one per app, like Starlette's `app.state`:
nothing of it lives in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from service.drain_flag import DrainState
from service.session_metrics import WEBSOCKET

SignalHandler = Callable[[int, FrameType | None], Any]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How deep `sessions_of` looks through ASGI middleware wrapped around the app.
MAX_WRAPPERS = 16


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
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiting_for_none_open: list[asyncio.Future[None]] = []
        self.chained_signals: dict[int, tuple[SignalHandler, SignalHandler]] = {}

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

    def session_started(self, kind: str, on_stop: Callable[[], None]) -> None:
        """A session is open: counted, and `on_stop` runs when the graceful stop begins."""
        if kind == WEBSOCKET:
            self.open_websockets += 1
        else:
            self.open_streams += 1
        self.stop_callbacks.add(on_stop)

    def session_ended(self, kind: str, on_stop: Callable[[], None]) -> None:
        self.stop_callbacks.discard(on_stop)
        if kind == WEBSOCKET:
            self.open_websockets -= 1
        else:
            self.open_streams -= 1
        if not self.sessions_open():
            for waiter in self.waiting_for_none_open:
                if not waiter.done():
                    waiter.set_result(None)
            self.waiting_for_none_open.clear()

    def sessions_open(self) -> int:
        return self.open_websockets + self.open_streams

    async def none_open(self) -> None:
        """On the app's loop: return once no session of this worker is open."""
        if self.sessions_open():
            waiter = asyncio.get_running_loop().create_future()
            self.waiting_for_none_open.append(waiter)
            await waiter

    def begin_stop(self) -> None:
        """On the app's loop: refuse new sessions, and tell every open one to end now."""
        if self.stopping_now:
            return
        self.stopping_now = True
        for callback in list(self.stop_callbacks):
            callback()

    async def stop_and_wait(self, bound: float) -> int:
        """Begin the stop, then wait until every session has ended or `bound` seconds have passed;
        returns how many are still open.

        For a server that drops the open sessions as soon as its own stop begins (granian): its
        stop waits for this, so every WebSocket's close frame is sent and every stream's last event.
        """
        self.begin_stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await self.none_open()
        return self.sessions_open()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """At lifespan start-up, in the worker: learn when the server's graceful stop begins."""
        self.loop = loop
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue  # default or ignored: this server does not stop gracefully on it
            handler = _chained_handler(previous, self._begin_stop_from_signal)
            try:
                signal.signal(signum, handler)
            except ValueError:  # not the main thread: the adapter calls begin_stop_of(app) instead
                continue
            self.chained_signals[signum] = (previous, handler)

    def detach(self) -> None:
        """At lifespan shutdown: the server's own handlers again, where ours is still the one installed."""
        for signum, (previous, handler) in self.chained_signals.items():
            if signal.getsignal(signum) is handler:
                with contextlib.suppress(ValueError):
                    signal.signal(signum, previous)
        self.chained_signals.clear()
        self.loop = None

    def _begin_stop_from_signal(self) -> None:
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(self.begin_stop)


def sessions_of(app: object) -> RealtimeState | None:
    """The long-lived connections of an app built by `create_app` (`app.state.realtime`), found
    through ASGI middleware that keeps the app it wraps as `.app` (Starlette's convention).
    None for an app without them: APP_ASGI_APP may name any ASGI app."""
    for _ in range(MAX_WRAPPERS):
        sessions = getattr(getattr(app, "state", None), "realtime", None)
        if isinstance(sessions, RealtimeState):
            return sessions
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def begin_stop_of(app: object) -> None:
    """On the worker's loop: tell the app's WebSockets and event streams the graceful stop has begun."""
    sessions = sessions_of(app)
    if sessions is not None:
        sessions.begin_stop()


def _chained_handler(previous: SignalHandler, begin_stop: Callable[[], None]) -> SignalHandler:
    def handler(signum: int, frame: FrameType | None) -> Any:
        begin_stop()
        return previous(signum, frame)

    return handler
