"""Granian profile: a Rust HTTP server driving the app through its ASGI interface.

Granian has no idle keep-alive timeout for HTTP/1 and recycles workers by age or
memory, not by request count: an explicitly set APP_KEEPALIVE_TIMEOUT and any
APP_MAX_REQUESTS are refused rather than silently ignored.

Replacing a live worker (APP_MAX_WORKER_MEMORY, SIGHUP) is granian's, with two of its
steps replaced (`RecyclingServer`, granian 2.8's private methods): the old worker stops
once its replacement serves (it marks the end of its lifespan start-up), not after a
fixed delay; and memory is checked every 0.5 s with deploy/memory_limit.py's rule, so a
growing worker is replaced before it passes the limit, as under our supervisor.

Granian has no worker heartbeat: APP_WORKER_TIMEOUT is deploy/heartbeat_files.py's,
a watcher thread in granian's main process reading beats each worker's loop writes.
Workers are spawned with a loader that ties them to the main process
(deploy/lifecycle.py `die_with_parent`) and wraps the app in the beating one.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from granian._internal import load_target
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from deploy.common import SHM_DIR
from deploy.heartbeat_files import ASGIApp, BeatingApp, HeartbeatWatch, Message, Scope
from deploy.lifecycle import die_with_parent, resident_bytes
from deploy.memory_limit import BootTimes, MemoryTrend
from deploy.profile import NO_PING_TIMEOUT, NO_PINGS, Native, Profile, Refused
from service.logs import log_config
from service.settings import Settings
from service.versions import require

require(
    "granian",
    ">=2.8,<2.9",
    "deploy/granian.py (granian._internal.load_target, Server's target_loader,"
    " _respawn_workers, _handle_rss_signal)",
)

logger = logging.getLogger("deploy.granian")

RSS_SAMPLE_SECONDS = 0.5
# The longest a replacement is waited for before the worker it replaces stops anyway.
RESPAWN_BOUND_SECONDS = 30.0
# From a worker's ready mark (end of its lifespan start-up) to its accepting: granian starts
# its listener right after, in the same thread.
ACCEPTING_SETTLE_SECONDS = 0.1
READY_POLL_SECONDS = 0.02
# Ours, not granian's: taken out of the native config before it reaches granian's Server.
WATCHDOG = "worker_timeout"


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
        "rss_sample_interval": RSS_SAMPLE_SECONDS,  # RecyclingServer's rule, deploy/memory_limit.py
        "rss_samples": 1,
        # RecyclingServer: the longest the worker being replaced waits for its replacement to serve.
        "respawn_interval": RESPAWN_BOUND_SECONDS,
        "url_path_prefix": None,  # root path is applied by the app, see service/app.py
        "reload": False,
        "env_files": None,
        WATCHDOG: settings.worker_timeout,  # deploy/heartbeat_files.py, in granian's main process
    }


def run(settings: Settings) -> int:
    native = native_config(settings)
    worker_timeout = native.pop(WATCHDOG)
    # Where workers leave their ready marks and, when hung workers are watched, their beats.
    marks = Path(tempfile.mkdtemp(prefix="asgi-deploy-workers-", dir=SHM_DIR if SHM_DIR.is_dir() else None))
    server = RecyclingServer(marks, **native)
    if worker_timeout:
        HeartbeatWatch(marks, worker_timeout).start()
    try:
        server.serve(
            target_loader=functools.partial(load_in_worker, os.getpid(), marks, bool(worker_timeout))
        )
    finally:
        shutil.rmtree(marks, ignore_errors=True)
    return 0


def load_in_worker(parent_pid: int, marks: Path, beat: bool, target: str) -> Any:
    """Runs in each spawned worker before it serves: die with the main process, load the app,
    mark when it is about to serve and, when hung workers are watched, make its loop beat."""
    die_with_parent(parent_pid)
    app = cast(ASGIApp, load_target(target))
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

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
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
        self.trends: dict[int, MemoryTrend] = {}

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
        now = time.monotonic()
        lead = self.boot_times.estimate() + ACCEPTING_SETTLE_SECONDS + self.rss_sample_interval
        workers: list[Any] = self.wrks
        live = {worker._id(): worker for worker in workers}
        limit = self.workers_rss or 0  # this is only called when it is set
        self.trends = {pid: trend for pid, trend in self.trends.items() if pid in live}
        to_restart = []
        for pid, worker in live.items():
            size = resident_bytes(pid)
            if size is None:
                continue
            trend = self.trends.setdefault(pid, MemoryTrend())
            trend.add(now, size)
            if trend.reaches(limit, lead):
                logger.info("worker-%d %s; replacing it", worker.idx + 1, trend.describe(limit, lead))
                to_restart.append(worker.idx)
        if to_restart:
            self._respawn_workers(to_restart, spawn_target, target_loader, delay=self.respawn_interval)
            self._metrics.incr_respawn_rss(len(to_restart))


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
        "max_worker_memory": Native(
            "workers_max_rss", "every 0.5 s; the replacement starts early enough to serve before the limit"
        ),
        "ws_ping_interval": Refused(f"granian {NO_PINGS}"),
        "ws_ping_timeout": Refused(f"granian {NO_PING_TIMEOUT}"),
    },
    build=native_config,
    serve=run,
)
