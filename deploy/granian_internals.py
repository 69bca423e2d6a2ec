"""Everything of granian's that is not its public API, in one place: six carried patches.

The granian profile (deploy/granian.py) runs granian's own server (`granian.server.MPServer`,
embedded through its public `serve(target_loader=...)`). Each patch below declares the
granian releases it was tested on (deploy/carried.py) and asks `applies()` before it touches
anything private; outside that range granian's own behaviour stands and the launcher warns.

In granian's main process, `RecyclingServer` replaces three private steps:
- `REPLACEMENT_SERVES_FIRST`: replacing a live worker (APP_MAX_WORKER_MEMORY, SIGHUP) stops
  the old one once its replacement serves (it marks the end of its lifespan start-up), not
  after granian's fixed `respawn_interval`.
- `MEMORY_LEAD`: memory is checked every 0.5 s with deploy/memory_limit.py's rule, so a
  growing worker is replaced before it passes the limit, not once it is over it.
- `CRASHES_REPLACED`: a worker killed or crashing once it served is replaced however often;
  granian's crash-loop rule (a worker index dying within 5.5 s of its respawn stops the whole
  server) is kept for the only case it is right for: a worker that fails before it serves.

`CERTIFICATE_PATHS_REREAD`: granian resolves the certificate's paths once, at start-up, and
spawns every worker with them; at each reload (SIGHUP, a rotation: deploy/certificate_watch.py)
they are resolved again, so a Secret's `..data` swap is followed.

In each worker, `load_in_worker` (granian's public `target_loader`) makes it die with the main
process, beat when hung workers are watched (deploy/heartbeat_files.py) and mark when it is
ready; those parts are public. At SIGTERM every open WebSocket gets the app's 1012 close
frame, which takes two patches (without them 53-100 of 100 did; granian 2.8's Rust source):
- `CLOSE_WHILE_READING`: its `websocket.close` waits for the socket's read half, which a
  pending `receive` holds until the peer sends something (src/asgi/io.rs): the pending read is
  cancelled first, so a close from another task (the stop's) goes out at once;
- `STOP_AFTER_SESSIONS`: once a worker's stop begins it closes its runtime at once, cancelling
  every WebSocket session and dropping its socket (src/serve.rs `wrk.rt.close()` right after
  the listener stops; src/asgi/http.rs runs each session under `spawn_cancellable`), while the
  app is told by the same SIGTERM: the worker's own stop handler, put on its loop, has the app
  end every session first and begins granian's stop once all have ended, or after half of
  APP_GRACEFUL_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import granian._signals
from granian.server import MPServer

from deploy.carried import CarriedPatch
from deploy.common import app_to_serve
from deploy.heartbeat_files import ASGIApp, BeatingApp, Message, Receive, Scope, Send
from deploy.lifecycle import die_with_parent
from deploy.memory_limit import MIB, BootTimes, MemoryWatch
from deploy.metrics_dir import forget_worker
from deploy.worker_timing import ACCEPTING_SETTLE_SECONDS

GRANIAN_2_8 = ">=2.8,<2.9"  # 2.8.7 (the lock) and 2.8.9 (the newest) checked
MODULE = "deploy/granian_internals.py"

REPLACEMENT_SERVES_FIRST = CarriedPatch(
    distribution="granian",
    tested=GRANIAN_2_8,
    capability=(
        "a worker being replaced (APP_MAX_WORKER_MEMORY, SIGHUP) stopping only once its replacement serves"
    ),
    fallback="granian stops it 3.5 s (its respawn_interval) after starting the replacement, serving or not",
    upstream=(
        "https://github.com/emmett-framework/granian/issues/921 (closed: tune --respawn-interval);"
        " deleted once MPServer._respawn_workers stops the old worker when the new one reports it"
        " serves, bounded by respawn_interval"
    ),
    module=MODULE,
)
MEMORY_LEAD = CarriedPatch(
    distribution="granian",
    tested=GRANIAN_2_8,
    capability="replacing a growing worker early enough that it never passes APP_MAX_WORKER_MEMORY",
    fallback="granian's own check (workers_max_rss, every 0.5 s) replaces a worker once it is over the limit",
    upstream=(
        "none filed; deleted once MPServer's RSS check takes a lead (respawn when RSS plus its growth"
        " over one boot reaches workers_max_rss) or a public hook choosing the workers to respawn"
    ),
    module=MODULE,
)
CRASHES_REPLACED = CarriedPatch(
    distribution="granian",
    tested=GRANIAN_2_8,
    capability=(
        "replacing a worker killed or crashing once it served however often (only a worker failing"
        " before it serves stops the server)"
    ),
    fallback=(
        "granian's crash-loop rule: a worker index dying again within 5.5 s of its respawn stops"
        " the whole server"
    ),
    upstream=(
        "none filed; deleted once MPServer._serve_loop counts towards its crash loop only workers"
        " that exit before they start serving (or makes the 5.5 s window an option)"
    ),
    module=MODULE,
)
CLOSE_WHILE_READING = CarriedPatch(
    distribution="granian",
    tested=GRANIAN_2_8,
    capability="a WebSocket close sent while the session's receive is pending (the 1012 at SIGTERM)",
    fallback="the close waits until the peer sends something (src/asgi/io.rs)",
    upstream=(
        "none filed; deleted once src/asgi/io.rs sends the close frame without awaiting the ws_rx"
        " lock a pending receive holds"
    ),
    module=MODULE,
)
STOP_AFTER_SESSIONS = CarriedPatch(
    distribution="granian",
    tested=GRANIAN_2_8,
    capability="ending every WebSocket (1012) and event stream at SIGTERM before granian's stop cuts them",
    fallback=(
        "granian's stop closes the worker's runtime at once, cutting open sessions, most without a close"
    ),
    upstream=(
        "https://github.com/emmett-framework/granian/issues/796 (open); deleted once a worker's stop"
        " lets the app end its sessions (runs the lifespan shutdown, or a stop notice, before closing"
        " its runtime), bounded by workers_kill_timeout"
    ),
    module=MODULE,
)
CERTIFICATE_PATHS_REREAD = CarriedPatch(
    distribution="granian",
    tested=GRANIAN_2_8,
    capability=(
        "a certificate renewed by a symlink swap (a Kubernetes Secret's `..data`) served after SIGHUP"
        " or a rotation (deploy/certificate_watch.py)"
    ),
    fallback=(
        "workers keep the paths granian resolved at start-up: a Secret's old directory is gone after its"
        " swap, and a replacement worker fails to load it"
    ),
    upstream=(
        "none filed; deleted once granian resolves ssl_cert/ssl_key when it spawns a worker (or keeps"
        " the paths as given), not once in Server.build_ssl_context"
    ),
    module=MODULE,
)
PATCHES = (
    REPLACEMENT_SERVES_FIRST,
    MEMORY_LEAD,
    CRASHES_REPLACED,
    CLOSE_WHILE_READING,
    STOP_AFTER_SESSIONS,
    CERTIFICATE_PATHS_REREAD,
)
SERVER_PATCHES = (REPLACEMENT_SERVES_FIRST, MEMORY_LEAD, CRASHES_REPLACED)

logger = logging.getLogger("deploy.granian")

READY_POLL_SECONDS = 0.02


def granian_server(marks: Path, metrics_dir: Path | None, **options: Any) -> MPServer:
    """granian's multi-process server, with RecyclingServer's patches where they apply, and the
    certificate's paths resolved again at each reload (its public `on_reload` hook)."""
    server = (
        RecyclingServer(marks, metrics_dir, **options)
        if any(patch.applies() for patch in SERVER_PATCHES)
        else MPServer(**options)
    )
    cert, key = options.get("ssl_cert"), options.get("ssl_key")
    if cert is not None and key is not None and CERTIFICATE_PATHS_REREAD.applies():
        server.on_reload(functools.partial(resolve_certificate_again, server, Path(cert), Path(key)))
    return server


def resolve_certificate_again(server: MPServer, cert: Path, key: Path) -> None:
    """Point granian's SSL settings, which its workers are spawned with, at what the configured
    paths resolve to now. granian 2.8 keeps them in `ssl_ctx`, a tuple (enabled, cert, key, ...),
    resolved once by `build_ssl_context`."""
    context: tuple[Any, ...] = server.ssl_ctx
    server.ssl_ctx = (context[0], str(cert.resolve()), str(key.resolve()), *context[3:])


def load_in_worker(parent_pid: int, marks: Path, beat: bool, sessions_bound: float, target: str) -> Any:
    """granian's `target_loader`, run in each spawned worker before it serves: die with the main
    process, hold its stop until the long-lived sessions have ended, load the app."""
    die_with_parent(parent_pid)
    app = cast(ASGIApp, app_to_serve(target))  # granian's loader is private
    if STOP_AFTER_SESSIONS.applies():
        hold_stop_for_sessions(app, sessions_bound)
    return worker_app(app, marks, beat)


def worker_app(app: ASGIApp, marks: Path, beat: bool) -> ASGIApp:
    """The app as a worker serves it: it marks when it is about to serve and, when hung workers
    are watched, makes its loop beat."""
    if CLOSE_WHILE_READING.applies():
        app = CloseWhileReading(app)
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
    """granian's server with three of granian 2.8's private steps replaced, each where its patch
    applies: `_respawn_workers` (REPLACEMENT_SERVES_FIRST), `_handle_rss_signal` (MEMORY_LEAD)
    and the `respawned_wrks` its main loop tells a crash loop by (CRASHES_REPLACED)."""

    def __init__(self, marks: Path, metrics_dir: Path | None, **options: Any) -> None:
        super().__init__(**options)
        self.marks = marks
        self.metrics_dir = metrics_dir
        self.boot_times = BootTimes()
        self.memory = MemoryWatch((options.get("workers_max_rss") or 0) * MIB)
        if CRASHES_REPLACED.applies():
            # granian uses it as a dict only through `[idx] =`, `.get` and `.clear`.
            self.respawned_wrks = cast(Any, BootFailures(self.failed_to_boot))

    def failed_to_boot(self, idx: int) -> bool:
        """Whether the worker that just died at `idx` exited with an error before it served."""
        worker: Any = self.wrks[idx]  # granian's WorkerProcess, untyped
        code = worker.inner.exitcode
        if code is None or code <= 0 or ready_mark(self.marks, worker._id()).exists():
            return False  # alive, stopped cleanly, killed by a signal, or it had served
        logger.error("worker-%d failed to boot (exit %s); stopping", idx + 1, code)
        return True

    def _respawn_workers(
        self, workers: list[int], spawn_target: Any, target_loader: Any, delay: float = 0
    ) -> None:
        if not delay:  # a dead worker: nothing to overlap with
            dead: list[Any] = [self.wrks[idx] for idx in workers]
            super()._respawn_workers(workers, spawn_target, target_loader, delay)
            for worker in dead:
                ready_mark(self.marks, worker._id()).unlink(missing_ok=True)
                forget_worker(worker._id(), self.metrics_dir)  # its live gauges end with it
            return
        if not REPLACEMENT_SERVES_FIRST.applies():
            super()._respawn_workers(workers, spawn_target, target_loader, delay)
            return
        for idx in workers:
            self.respawned_wrks[idx] = time.monotonic()
            logger.info("Respawning worker-%d", idx + 1)
            old: Any = self.wrks.pop(idx)
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
            forget_worker(old._id(), self.metrics_dir)
        self._metrics.incr_spawn(len(workers))

    def _await_ready(self, worker: Any, deadline: float) -> bool:
        mark = ready_mark(self.marks, worker._id())
        while time.monotonic() < deadline and worker.is_alive():
            if mark.exists():
                return True
            time.sleep(READY_POLL_SECONDS)
        return False

    def _handle_rss_signal(self, spawn_target: Any, target_loader: Any) -> None:
        if not MEMORY_LEAD.applies():
            super()._handle_rss_signal(spawn_target, target_loader)  # type: ignore[no-untyped-call]
            return
        lead = self.boot_times.estimate() + ACCEPTING_SETTLE_SECONDS + self.rss_sample_interval
        workers: list[Any] = self.wrks
        # Only workers that serve, as the supervisor does: a booting worker's growth is its import,
        # not a leak, and taken for one it had a replacement retired as soon as it came up.
        live = {worker._id(): worker for worker in workers if ready_mark(self.marks, worker._id()).exists()}
        to_restart = []
        for pid, why in self.memory.to_retire(live, lead):
            logger.info("worker-%d %s; replacing it", live[pid].idx + 1, why)
            to_restart.append(live[pid].idx)
        if to_restart:
            self._respawn_workers(to_restart, spawn_target, target_loader, delay=self.respawn_interval)
            self._metrics.incr_respawn_rss(len(to_restart))


class BootFailures:
    """Stands in for granian 2.8's `respawned_wrks` (worker index -> when it was respawned), which
    its main loop reads for one thing: a dead worker's index counts as a crash loop, and stops the
    server, when `now - respawned_wrks.get(idx, 0) <= 5.5`. This one answers "now" for a worker
    that failed to boot and "never" for any other death, whatever granian recorded."""

    NEVER = float("-inf")

    def __init__(self, failed_to_boot: Callable[[int], bool]) -> None:
        self.failed_to_boot = failed_to_boot

    def __setitem__(self, idx: int, respawned_at: float) -> None:
        """granian records each respawn: when it happened is not what tells a crash loop."""

    def get(self, idx: int, default: float = 0.0) -> float:
        return time.monotonic() if self.failed_to_boot(idx) else self.NEVER

    def clear(self) -> None:
        """Nothing recorded, nothing to forget."""


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


def hold_stop_for_sessions(app: object, bound: float) -> None:
    """In the worker: wrap granian's `set_loop_signals`, which its worker calls after this loader
    and before serving, so that SIGTERM/SIGINT first has the app end every WebSocket and event
    stream (service/sessions.py `stop_and_wait`), then begins granian's stop."""
    granian_set_loop_signals: Callable[[asyncio.AbstractEventLoop], Any] = granian._signals.set_loop_signals

    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        granian_stop = granian_set_loop_signals(loop)
        holding: list[asyncio.Task[None]] = []

        def on_stop_signal(signum: int) -> None:
            # Once only: a Ctrl-C reaches the worker as SIGINT and, from the main process, SIGTERM.
            if not holding:
                holding.append(loop.create_task(stop_after_sessions(granian_stop, app, bound)))

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_stop_signal, signum)  # replaces granian's own
        return granian_stop

    granian._signals.set_loop_signals = set_loop_signals


async def stop_after_sessions(granian_stop: Any, app: object, bound: float) -> None:
    from service.sessions import sessions_of  # noqa: PLC0415 - the worker's app imports it; the launcher need not

    sessions = sessions_of(app)
    try:
        still_open = await sessions.stop_and_wait(bound) if sessions is not None else 0
        if still_open:
            logger.warning(
                "%d long-lived connections still open after %.1f s: granian cuts them", still_open, bound
            )
    finally:
        granian_stop.set()
