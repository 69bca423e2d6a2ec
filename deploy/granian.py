"""Granian profile: a Rust HTTP server driving the app through its ASGI interface.

Granian has no idle keep-alive timeout for HTTP/1 and recycles workers by age or
memory, not by request count: an explicitly set APP_KEEPALIVE_TIMEOUT and any
APP_MAX_REQUESTS are refused rather than silently ignored.

APP_MAX_WORKER_MEMORY is granian's own `workers_max_rss`, sampled every second: the
replacement starts, serves for `respawn_interval` seconds next to the old worker,
then the old one stops gracefully.

Granian has no worker heartbeat: APP_WORKER_TIMEOUT is deploy/heartbeat_files.py's,
a watcher thread in granian's main process reading beats each worker's loop writes.
Workers are spawned with a loader that ties them to the main process
(deploy/lifecycle.py `die_with_parent`) and wraps the app in the beating one.

At SIGTERM every open WebSocket gets the app's 1012 close frame only with two mends
(without them 53-100 of 100 did; granian 2.8's source, Rust side):
- its `websocket.close` waits for the socket's read half, which a pending `receive` holds
  until the peer sends something (src/asgi/io.rs): `CloseWhileReading` cancels that read
  first, so a close from another task (the stop's) goes out at once;
- once a worker's stop begins it closes its runtime at once, cancelling every WebSocket
  session and dropping its socket (src/serve.rs `wrk.rt.close()` right after the listener
  stops; src/asgi/http.rs runs each session under `spawn_cancellable`), while the app is
  told by the same SIGTERM: `hold_stop_for_sessions` puts the worker's own stop handler on
  its loop, which has the app end every session first and begins granian's stop once all
  have ended, or after half of APP_GRACEFUL_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import granian._signals
from granian._internal import load_target
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from deploy.common import SHM_DIR
from deploy.heartbeat_files import ASGIApp, BeatingApp, HeartbeatWatch, Message, Scope
from deploy.lifecycle import die_with_parent
from deploy.profile import NO_PING_TIMEOUT, NO_PINGS, Native, Profile, Refused
from service.logs import log_config
from service.settings import Settings
from service.versions import require

require(
    "granian",
    ">=2.8,<2.9",
    "deploy/granian.py (granian._internal.load_target, Server's target_loader, "
    "granian._signals.set_loop_signals and its WorkerSignal, a WebSocket receive that can be "
    "cancelled and a close that waits for it)",
)
logger = logging.getLogger("deploy.granian")

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RSS_SAMPLE_SECONDS = 1
RESPAWN_OVERLAP_SECONDS = 2.0  # a worker boots in well under a second; granian's default is 3.5
# Ours, not granian's: taken out of the native config before it reaches granian's Server.
WATCHDOG = "worker_timeout"
# Share of APP_GRACEFUL_TIMEOUT the sessions get to end before granian's own stop begins; the rest
# is its own: in-flight requests, then the lifespan shutdown, before the main process kills the worker.
SESSIONS_SHARE_OF_GRACEFUL = 0.5


def native_config(settings: Settings) -> dict[str, Any]:
    return {
        "target": settings.asgi_app,
        "address": settings.host,
        "port": settings.port,
        "interface": Interfaces.ASGI,  # with lifespan: /readyz depends on it
        "workers": settings.workers,
        "loop": Loops.uvloop,
        "http": HTTPModes.http1,
        # Granian has no message-size limit of its own: the app closes with 1009 (service/api/realtime.py).
        "websockets": True,
        "http1_settings": HTTP1Settings(
            keep_alive=True, header_read_timeout=settings.request_head_timeout * 1000
        ),
        "log_enabled": True,
        "log_level": LogLevels(settings.log_level),
        "log_dictconfig": log_config(settings),
        "log_access": False,  # the app writes access lines (service/access_log.py)
        # Time a worker gets to finish in-flight requests once told to stop.
        "workers_kill_timeout": settings.graceful_timeout,
        "respawn_failed_workers": True,
        "workers_max_rss": settings.max_worker_memory or None,  # MiB, as granian counts
        "rss_sample_interval": RSS_SAMPLE_SECONDS,
        "rss_samples": 1,
        # How long a replacement serves next to the worker it replaces before that one stops.
        "respawn_interval": RESPAWN_OVERLAP_SECONDS,
        "url_path_prefix": None,  # root path is applied by the app, see service/app.py
        "reload": False,
        "env_files": None,
        WATCHDOG: settings.worker_timeout,  # deploy/heartbeat_files.py, in granian's main process
    }


def run(settings: Settings) -> int:
    native = native_config(settings)
    worker_timeout = native.pop(WATCHDOG)
    server = Server(**native)
    beats = None
    if worker_timeout:
        beats = Path(
            tempfile.mkdtemp(prefix="asgi-deploy-heartbeats-", dir=SHM_DIR if SHM_DIR.is_dir() else None)
        )
        HeartbeatWatch(beats, worker_timeout).start()
    try:
        sessions_bound = settings.graceful_timeout * SESSIONS_SHARE_OF_GRACEFUL
        server.serve(target_loader=functools.partial(load_in_worker, os.getpid(), beats, sessions_bound))
    finally:
        if beats is not None:
            shutil.rmtree(beats, ignore_errors=True)
    return 0


def load_in_worker(parent_pid: int, beats: Path | None, sessions_bound: float, target: str) -> Any:
    """Runs in each spawned worker before it serves: die with the main process, hold its stop
    until the long-lived sessions have ended, load the app and, when hung workers are watched,
    make its event loop beat."""
    die_with_parent(parent_pid)
    hold_stop_for_sessions(sessions_bound)
    app = CloseWhileReading(cast(ASGIApp, load_target(target)))
    return app if beats is None else BeatingApp(app, beats)


class CloseWhileReading:
    """The app, with a WebSocket close that is not held up by the session's read in flight.

    Granian's `websocket.close` needs the socket's read half, which a pending `receive` holds
    until the peer sends something (src/asgi/io.rs: `close` awaits the `ws_rx` lock that
    `receive` keeps across its wait). A close from another task (the graceful stop's 1012)
    would wait for the peer. So the pending read is cancelled first (granian then drops that
    read), the close goes out, and the read is retried: it reports the end of the session.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        session = _SessionIO(receive, send)
        await self.app(scope, session.receive, session.send)


class _SessionIO:
    def __init__(self, receive: Receive, send: Send) -> None:
        self.server_receive = receive
        self.server_send = send
        self.reading: Any = None  # granian's future-like awaitable: it can be cancelled
        self.closing = False
        self.closed = asyncio.Event()

    async def receive(self) -> Message:
        while True:
            self.reading = self.server_receive()
            try:
                message: Message = await self.reading
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self.closing or task is None or task.cancelling():
                    raise  # not given up for the close: the session itself is cancelled
                await self.closed.wait()
            else:
                return message
            finally:
                self.reading = None

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.close" and self.reading is not None:
            self.closing = True
            self.reading.cancel()
        try:
            await self.server_send(message)
        finally:
            if self.closing:
                self.closed.set()


def hold_stop_for_sessions(bound: float) -> None:
    """In the worker: wrap granian's `set_loop_signals`, which its worker calls after this loader
    and before serving, so that SIGTERM/SIGINT first has the app end every WebSocket and event
    stream (service/realtime.py `stop_all_and_wait`), then begins granian's stop."""
    granian_set_loop_signals: Callable[[asyncio.AbstractEventLoop], Any] = granian._signals.set_loop_signals

    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        granian_stop = granian_set_loop_signals(loop)
        holding: list[asyncio.Task[None]] = []

        def on_stop_signal(signum: int) -> None:
            # Once only: a Ctrl-C reaches the worker as SIGINT and, from the main process, SIGTERM.
            if not holding:
                holding.append(loop.create_task(stop_after_sessions(granian_stop, bound)))

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_stop_signal, signum)  # replaces granian's own
        return granian_stop

    granian._signals.set_loop_signals = set_loop_signals


async def stop_after_sessions(granian_stop: Any, bound: float) -> None:
    from service.realtime import stop_all_and_wait  # noqa: PLC0415 - the worker's app imports it; the launcher need not

    try:
        still_open = await stop_all_and_wait(bound)
        if still_open:
            logger.warning(
                "%d long-lived connections still open after %.1f s: granian cuts them", still_open, bound
            )
    finally:
        granian_stop.set()


def _off(value: int) -> bool:
    return value == 0


NO_REQUEST_COUNT = "granian recycles workers by lifetime or memory, not by request count; unset it"

PROFILE = Profile(
    name="granian",
    summary="Granian, a Rust HTTP server, driving the app through its ASGI interface on uvloop",
    settings={
        "asgi_app": Native("target"),
        "host": Native("address"),
        "port": Native("port"),
        "workers": Native("workers"),
        "log_level": Native("log_level"),
        "log_format": Native("log_dictconfig", "service/logs.py's one dictConfig"),
        "keepalive_timeout": Refused(
            "granian's HTTP/1 keep-alive has no idle timeout; unset it or pick another profile"
        ),
        "request_head_timeout": Native("http1_settings.header_read_timeout", "in milliseconds"),
        "graceful_timeout": Native("workers_kill_timeout"),
        "max_requests": Refused(NO_REQUEST_COUNT, accepts=_off),
        "max_requests_jitter": Refused(NO_REQUEST_COUNT, accepts=_off),
        "worker_timeout": Native(WATCHDOG, "deploy/heartbeat_files.py: beats each worker's loop writes"),
        "max_worker_memory": Native("workers_max_rss", "granian's own, sampled every second"),
        "ws_ping_interval": Refused(f"granian {NO_PINGS}"),
        "ws_ping_timeout": Refused(f"granian {NO_PING_TIMEOUT}"),
    },
    build=native_config,
    serve=run,
)
