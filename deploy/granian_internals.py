"""Everything of granian's that is not its public API, in one place (granian 2.8).

The granian profile (deploy/granian.py) runs granian's own server with:

- `RecyclingServer`, in granian's main process: replacing a live worker (APP_MAX_WORKER_MEMORY,
  SIGHUP) stops the old one once its replacement serves (the replacement marks the end of its
  lifespan start-up), not after granian's fixed delay; and memory is checked every 0.5 s with
  deploy/memory_limit.py's rule, so a growing worker is replaced before it passes the limit.
- `load_in_worker`, granian's target loader, in each worker before it serves: the worker dies
  with the main process (deploy/lifecycle.py `die_with_parent`), its loop beats when hung
  workers are watched (deploy/heartbeat_files.py), it marks when it is ready, and at SIGTERM
  every open WebSocket gets the app's 1012 close frame. That takes two mends (without them
  53-100 of 100 did; granian 2.8's Rust source):
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
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import granian._signals
from granian._internal import load_target
from granian.server.mp import MPServer

from deploy.heartbeat_files import ASGIApp, BeatingApp, Message, Receive, Scope, Send
from deploy.lifecycle import die_with_parent
from deploy.memory_limit import MIB, BootTimes, MemoryWatch
from service.versions import require

require(
    "granian",
    ">=2.8,<2.9",
    "deploy/granian_internals.py (granian._internal.load_target, the server's target_loader,"
    " MPServer._respawn_workers and _handle_rss_signal, granian._signals.set_loop_signals and its"
    " WorkerSignal, a WebSocket receive that can be cancelled and a close that waits for it)",
)

logger = logging.getLogger("deploy.granian")

# From a worker's ready mark (end of its lifespan start-up) to its accepting: granian starts
# its listener right after, in the same thread.
ACCEPTING_SETTLE_SECONDS = 0.1
READY_POLL_SECONDS = 0.02


def load_in_worker(parent_pid: int, marks: Path, beat: bool, sessions_bound: float, target: str) -> Any:
    """Runs in each spawned worker before it serves: die with the main process, hold its stop
    until the long-lived sessions have ended, load the app, mark when it is about to serve and,
    when hung workers are watched, make its loop beat."""
    die_with_parent(parent_pid)
    hold_stop_for_sessions(sessions_bound)
    app: ASGIApp = CloseWhileReading(cast(ASGIApp, load_target(target)))
    if beat:
        app = BeatingApp(app, marks)
    return MarkingReadyApp(app, marks)


def ready_mark(marks: Path, pid: int) -> Path:
    return marks / f"{pid}.ready"


class MarkingReadyApp:
    """Leaves `<marks>/<pid>.ready` once the app's lifespan start-up is complete."""

    def __init__(self, app: ASGIApp, marks: Path) -> None:
        self.app = app
        self.marks = marks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def marking_send(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                ready_mark(self.marks, os.getpid()).touch()

        return await self.app(scope, receive, marking_send)


class RecyclingServer(MPServer):
    """granian's server, replacing a live worker only once its replacement serves, and by memory
    with deploy/memory_limit.py's rule. Both methods replace granian 2.8's private ones."""

    def __init__(self, marks: Path, **options: Any) -> None:
        super().__init__(**options)
        self.marks = marks
        self.boot_times = BootTimes()
        self.memory = MemoryWatch((options.get("workers_max_rss") or 0) * MIB)

    def _respawn_workers(
        self, workers: list[int], spawn_target: Any, target_loader: Any, delay: float = 0
    ) -> None:
        if not delay:  # a crashed worker: nothing left to overlap with
            super()._respawn_workers(workers, spawn_target, target_loader, delay)
            return
        for idx in workers:
            self.respawned_wrks[idx] = time.monotonic()
            logger.info("Respawning worker-%d", idx + 1)
            old: Any = self.wrks.pop(idx)  # granian's WorkerProcess, untyped
            started = time.monotonic()
            new: Any = self._spawn_worker(idx=idx, target=spawn_target, callback_loader=target_loader)
            new.start()
            self.wrks.insert(idx, new)
            if self._await_ready(new, started + delay):
                self.boot_times.learn(time.monotonic() - started)
                time.sleep(ACCEPTING_SETTLE_SECONDS)
            logger.info("Stopping old worker-%d", idx + 1)
            old.terminate()
            old.join(self.workers_kill_timeout)
            if old.is_alive():
                logger.warning("Killing old worker-%d after it refused to gracefully stop", idx + 1)
                old.kill()
                old.join()
            ready_mark(self.marks, old._id()).unlink(missing_ok=True)
        self._metrics.incr_spawn(len(workers))

    def _await_ready(self, worker: Any, deadline: float) -> bool:
        mark = ready_mark(self.marks, worker._id())
        while time.monotonic() < deadline and worker.is_alive():
            if mark.exists():
                return True
            time.sleep(READY_POLL_SECONDS)
        return False

    def _handle_rss_signal(self, spawn_target: Any, target_loader: Any) -> None:
        lead = self.boot_times.estimate() + ACCEPTING_SETTLE_SECONDS + self.rss_sample_interval
        workers: list[Any] = self.wrks
        live = {worker._id(): worker for worker in workers}
        to_restart = []
        for pid, why in self.memory.to_retire(live, lead):
            logger.info("worker-%d %s; replacing it", live[pid].idx + 1, why)
            to_restart.append(live[pid].idx)
        if to_restart:
            self._respawn_workers(to_restart, spawn_target, target_loader, delay=self.respawn_interval)
            self._metrics.incr_respawn_rss(len(to_restart))


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
