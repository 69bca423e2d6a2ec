"""Long-lived connections (WebSockets, server-sent event streams): their metrics and per-worker state.

How they are counted, and why: a WebSocket session or an event stream lasts as
long as the client wants, so its duration is not a latency. Neither is recorded
in `http_requests_total` or `http_request_duration_seconds` (which stay the
figures of short requests); they have their own series:

- `realtime_sessions_open{kind, route}`: open now, summed over workers;
- `realtime_sessions_ended_total{kind, route, close}`: the WebSocket close code,
  or for a stream how it ended (`client`, `shutdown`);
- `websocket_messages_total{route, direction}` (`in`, `out`);
- `event_stream_events_total{route}`: events delivered.

A refused upgrade or stream (403, 503, 4xx) is an HTTP answer, and counted as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from prometheus_client import Counter, Gauge

from service.drain import DrainState

WEBSOCKET = "websocket"
EVENT_STREAM = "event_stream"

SESSIONS_OPEN = Gauge(
    "realtime_sessions_open",
    "WebSocket sessions and event streams open now.",
    ("kind", "route"),
    multiprocess_mode="livesum",
)
SESSIONS_ENDED = Counter(
    "realtime_sessions_ended",
    "WebSocket sessions and event streams ended, by close code (WebSocket) or end (stream).",
    ("kind", "route", "close"),
)
WS_MESSAGES = Counter(
    "websocket_messages", "WebSocket messages received (in) and sent (out).", ("route", "direction")
)
STREAM_EVENTS = Counter("event_stream_events", "Server-sent events delivered.", ("route",))


@functools.cache
def open_gauge(kind: str, route: str) -> Any:
    return SESSIONS_OPEN.labels(kind, route)


@functools.cache
def messages_counter(route: str, direction: str) -> Any:
    return WS_MESSAGES.labels(route, direction)


def session_ended(kind: str, route: str, close: str) -> None:
    SESSIONS_ENDED.labels(kind, route, close).inc()


def events_delivered(route: str, count: int) -> None:
    if count:
        STREAM_EVENTS.labels(route).inc(count)


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

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """At lifespan start-up, in the worker: learn when the server's graceful stop begins."""
        self.loop = loop
        _serving.append(self)
        _chain_stop_signals()

    def detach(self) -> None:
        with contextlib.suppress(ValueError):
            _serving.remove(self)


# The graceful stop begins differently on each server, and the app is told in two ways:
# - by a signal to the worker (SIGTERM from gunicorn's arbiter and granian's main process,
#   SIGTERM/SIGINT to a lone uvicorn or hypercorn process). Each server has installed its
#   own handler before the app starts; the app chains onto it, never replacing it (a loop's
#   handler, asyncio's or uvloop's, is woken through the wakeup fd whatever Python handler
#   runs). The server's handler still runs, right after.
# - by the adapter, where deploy/supervisor.py stops a worker with an event, not a signal
#   (uvicorn and hypercorn with several workers): `stop_all()`, on the worker's loop;
#   on granian, whose worker drops open WebSockets once its own stop begins, by the adapter's
#   handler on the worker's loop, which holds granian's stop back: `stop_all_and_wait()`.
_serving: list[RealtimeState] = []
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_chained: set[int] = set()


def stop_all() -> None:
    """Begin the stop of every long-lived connection of this process (on its event loop)."""
    for state in list(_serving):
        state.begin_stop()


async def stop_all_and_wait(bound: float) -> int:
    """Begin the stop of every long-lived connection of this process, then wait until each has
    ended or `bound` seconds have passed; returns how many are still open.

    For a server that drops the open sessions as soon as its own stop begins (granian): its
    stop waits for this, so every WebSocket's close frame is sent and every stream's last event.
    """
    stop_all()
    serving = list(_serving)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(bound):
            await asyncio.gather(*(state.none_open() for state in serving))
    return sum(state.sessions_open() for state in serving)


def _stop_from_signal() -> None:
    for state in list(_serving):
        with contextlib.suppress(RuntimeError):  # its loop has closed
            if state.loop is not None:
                state.loop.call_soon_threadsafe(state.begin_stop)


def _chain_stop_signals() -> None:
    for signum in _STOP_SIGNALS:
        if signum in _chained:
            continue
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue  # default or ignored: this server does not stop gracefully on it
        try:
            signal.signal(signum, _chained_handler(previous))
        except ValueError:  # not the main thread: the adapter calls stop_all() instead
            continue
        _chained.add(signum)


def _chained_handler(
    previous: Callable[[int, FrameType | None], Any],
) -> Callable[[int, FrameType | None], Any]:
    def handler(signum: int, frame: FrameType | None) -> Any:
        _stop_from_signal()
        return previous(signum, frame)

    return handler
