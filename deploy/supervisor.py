"""One worker supervisor for the profiles whose own supervisor falls short (uvicorn, hypercorn).

Why not theirs: hypercorn's loop SIGTERMs every worker as soon as the first one has
exited (busy workers die with their in-flight requests), has no SIGHUP handling and
stops everything when one worker dies. uvicorn's replaces a worker recycled after
`limit_max_requests` only once it has exited, ~1 s of spawn and import later: when
workers reach their limit together, no worker accepts for that long.

What this one does:
- SIGTERM/SIGINT: every worker drains (bounded by the graceful timeout), then exit.
- A worker that dies is replaced; one that exits with an error before it was ready
  is failing to boot, and the server stops instead of crash-looping.
- Overlap, never a gap: a worker that reports RETIRING (it reached its request
  limit) keeps serving until its replacement reports READY; SIGHUP retires every
  worker that way (rolling reload). Workers that cannot report READY count as ready
  `boot_seconds` after they started.
- Memory (checked every 0.5 s): a worker about to pass `max_memory_mib` is retired the
  same way, early enough that its replacement serves before it gets there
  (deploy/memory_limit.py).
- Workers start from a fork server that has already imported the third-party libraries
  the profile names (`preload`): a replacement serves in a few tenths of a second, not
  the second that spawning and importing take. The app's own code is imported by each
  worker, so SIGHUP still brings new code in.
- A ready worker whose event loop has not beaten its heartbeat for `worker_timeout`
  seconds (blocked loop, deadlock, SIGSTOP) is SIGKILLed and replaced.
- SIGTTIN/SIGTTOU: one worker more / fewer (never fewer than one). SIGUSR1 logs one line.
- Workers die with the supervisor (deploy/lifecycle.py `die_with`).

Workers talk to the supervisor through a `WorkerLink`: a stop flag it sets, a
pipe the worker reports on, and a heartbeat (a shared monotonic timestamp) its
event loop refreshes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from deploy.lifecycle import die_with, ignore_operator_signals
from deploy.memory_limit import MIB, BootTimes, MemoryWatch
from deploy.metrics_dir import forget_worker
from deploy.profile import Project, Support
from deploy.worker_timing import KILL_BACKSTOP_SECONDS, MEMORY_CHECK_SECONDS
from service.settings import Settings

READY = "ready"
RETIRING = "retiring"

SUPERVISOR_POLL_SECONDS = 0.2

logger = logging.getLogger("deploy.supervisor")


class StopFlag:
    """The supervisor's request that a worker stop: one shared byte, read and written without a lock.

    Not a multiprocessing Event: its lock is taken by every `is_set()` on both sides, and a worker
    SIGKILLed or SIGSTOPped while holding it would block the supervisor for good.
    """

    def __init__(self, value: Any) -> None:
        self.value = value

    def set(self) -> None:
        self.value.value = 1

    def is_set(self) -> bool:
        return bool(self.value.value)


@dataclass(frozen=True)
class WorkerLink:
    """The worker's end: `stop` is set by the supervisor, `reports` carries READY/RETIRING.

    `heartbeat` (a shared double) holds the CLOCK_MONOTONIC time of the worker loop's last beat:
    that clock is the same in every process of the machine.
    """

    stop: StopFlag
    reports: Connection
    heartbeat: Any
    supervisor_pid: int

    def beat(self) -> None:
        """Called from the worker's event loop: it is making progress."""
        self.heartbeat.value = time.monotonic()

    def report(self, message: str) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            self.reports.send(message)

    def stop_requested(self) -> bool:
        return self.stop.is_set()


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    stop: StopFlag
    reports: Connection | None
    started: float
    heartbeat: Any
    ready_at: float | None = None  # when the supervisor learnt it serves
    stop_asked_at: float | None = None
    ready: bool = False
    retiring: bool = False  # asked to leave, or announced it will: replaced, not respawned
    replacement: _Worker | None = field(default=None, repr=False)


WorkerTarget = Callable[..., None]  # target(link, **kwargs), importable by the spawn start method


# Third-party libraries every worker of the service imports, for the fork server to import once
# (`preload`); with the server's own modules, most of a worker's boot. Never the service's or
# the launcher's own modules: a worker started after SIGHUP must run the code on disk now. The
# one module of ours it imports, last, only freezes its heap and imports nothing of ours.
# One that is not installed is skipped. (FastAPI imports pydantic.v1 on the first route with a model.)
APP_LIBRARIES = ("fastapi", "pydantic.v1", "pydantic_settings", "orjson", "uvloop")
# Imported after them: freezes what the fork server holds, so the workers' collections leave it shared.
FORK_SERVER_GC = "deploy.fork_server_gc"

# What the profiles whose workers this supervisor runs declare for its settings: the project's,
# handed to the Supervisor from the launch's ProjectPart.
SUPERVISED_SETTINGS: dict[str, Support] = {
    "worker_timeout": Project("worker_timeout", "deploy/supervisor.py: each worker's loop beats"),
    "max_worker_memory": Project(
        "max_worker_memory", f"deploy/supervisor.py, every {MEMORY_CHECK_SECONDS:g} s, replacement first"
    ),
}


def needs_supervisor(settings: Settings) -> bool:
    """Recycling or watching even a single worker takes a supervisor in front of it; so does TLS,
    whose renewed certificate is served by replacing the workers (deploy/certificate_watch.py),
    unless HTTP/3 is asked: QUIC needs the one process, and a renewed certificate a restart."""
    rotates = settings.tls_enabled and not settings.quic_asked
    return bool(settings.max_requests or settings.worker_timeout or settings.max_worker_memory or rotates)


def _run_worker(target: WorkerTarget, link: WorkerLink, kwargs: dict[str, Any]) -> None:
    # Its parent is the fork server, which lives as long as any worker (each holds its "alive"
    # pipe) and whose death need not stop one that serves: it is the supervisor it dies with.
    die_with(link.supervisor_pid)
    target(link, **kwargs)


class Supervisor:
    def __init__(
        self,
        *,
        server: str,
        workers: int,
        target: WorkerTarget,
        target_kwargs: dict[str, Any],
        graceful_timeout: float,
        boot_seconds: float,
        metrics_dir: Path | None,
        close_sockets: Callable[[], None],
        worker_timeout: float = 0,
        max_memory_mib: int = 0,
        preload: tuple[str, ...] = (),
    ) -> None:
        self.server = server
        self.count = workers
        self.target = target
        self.target_kwargs = target_kwargs
        self.graceful_timeout = graceful_timeout
        self.boot_seconds = boot_seconds
        self.metrics_dir = metrics_dir
        self.close_sockets = close_sockets
        self.worker_timeout = worker_timeout
        self.memory = MemoryWatch(max_memory_mib * MIB)
        self.memory_checked = 0.0
        self.scale_requests = 0
        self.boot_times = BootTimes()  # from start to READY
        # Forked from a server process that imported `preload` once, not spawned and importing:
        # each worker still imports the app itself. The fork server dies with this process.
        self.ctx = get_context("forkserver")
        self.ctx.set_forkserver_preload([*preload, FORK_SERVER_GC])
        self.workers: list[_Worker] = []
        self.stopping = False
        self.reload_requested = False
        self.exitcode = 0

    def run(self) -> int:
        # Workers inherit an ignored SIGINT: a Ctrl-C reaching the whole process
        # group must not kill them mid-request; their stop flags stop them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _ in range(self.count):
            self.spawn()
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        signal.signal(signal.SIGTTIN, self.request_scale)
        signal.signal(signal.SIGTTOU, self.request_scale)
        ignore_operator_signals(self.server, can_scale=True)
        while not self.stopping:
            waitables: list[Any] = [w.process.sentinel for w in self.workers]
            waitables += [w.reports for w in self.workers if w.reports is not None]
            wait(waitables, timeout=SUPERVISOR_POLL_SECONDS)
            self.read_reports()
            self.reap()
            if self.reload_requested and not self.stopping:
                self.reload_requested = False
                logger.info("SIGHUP: replacing every worker")
                for worker in self.serving():
                    self.retire(worker)
            self.scale()
            self.kill_hung()
            self.recycle_large()
            self.stop_replaced()
        self.drain(self.workers)
        # Freed now, each worker's pipe and shared values go. Left to interpreter exit they would
        # be reported as leaked: behind the drain window this process leaves by os._exit.
        self.workers.clear()
        self.close_sockets()
        return self.exitcode

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def request_reload(self, *_: object) -> None:
        self.reload_requested = True

    def request_scale(self, signum: int, *_: object) -> None:
        self.scale_requests += 1 if signum == signal.SIGTTIN else -1

    def scale(self) -> None:
        requests, self.scale_requests = self.scale_requests, 0
        if self.stopping:
            return
        for _ in range(max(0, requests)):
            self.count += 1
            self.spawn()
            logger.info("SIGTTIN: one worker more (%d)", self.count)
        for _ in range(max(0, -requests)):
            replacements = {w.replacement for w in self.workers}
            serving = [w for w in self.serving() if w not in replacements]  # not one taking over
            if len(serving) <= 1:
                logger.warning("SIGTTOU: already down to one worker; keeping it")
                return
            self.count -= 1
            newest = max(serving, key=lambda w: w.started)
            newest.retiring = True  # leaves without a replacement
            self.ask_to_stop(newest)
            logger.info("SIGTTOU: one worker fewer (%d)", self.count)

    def ask_to_stop(self, worker: _Worker) -> None:
        if worker.stop_asked_at is None:
            worker.stop_asked_at = time.monotonic()
        worker.stop.set()

    def kill_hung(self) -> None:
        if not self.worker_timeout:
            return
        now = time.monotonic()
        for worker in self.workers:
            if worker.process.exitcode is not None or not self.is_ready(worker):
                continue
            if worker.stop_asked_at is not None:
                # A stopping worker's loop may stop beating (uvicorn ticks no more while it drains):
                # it gets its graceful timeout, then the same backstop as at shutdown.
                if now - worker.stop_asked_at > self.graceful_timeout + KILL_BACKSTOP_SECONDS:
                    logger.error(
                        "worker %s did not stop within its graceful timeout; killing it", worker.process.pid
                    )
                    worker.process.kill()
                    worker.stop_asked_at = now
                continue
            if worker.ready_at is None:  # ready by the boot bound, without a report
                worker.ready_at = worker.started + self.boot_seconds
            silent = now - max(worker.heartbeat.value, worker.ready_at)
            if silent > self.worker_timeout:
                logger.error(
                    "worker %s: event loop silent for %.1f s (APP_WORKER_TIMEOUT=%s); killing it",
                    worker.process.pid,
                    silent,
                    self.worker_timeout,
                )
                worker.process.kill()  # reaped and replaced by reap()
                worker.ready_at = now  # one kill per timeout, until the reap

    def recycle_large(self) -> None:
        now = time.monotonic()
        if not self.memory.limit_bytes or self.stopping or now - self.memory_checked < MEMORY_CHECK_SECONDS:
            return
        self.memory_checked = now
        # How long a worker retired now goes on growing: until its replacement serves, and this
        # check may come up to one interval late.
        lead = self.boot_times.estimate() + MEMORY_CHECK_SECONDS
        serving = {w.process.pid: w for w in self.serving() if w.process.pid is not None}
        for pid, why in self.memory.to_retire(serving, lead):
            logger.info("worker %s %s; replacing it", pid, why)
            self.retire(serving[pid])

    def spawn(self) -> _Worker:
        reader, writer = self.ctx.Pipe(duplex=False)
        stop = StopFlag(self.ctx.RawValue("b", 0))
        heartbeat = self.ctx.RawValue("d", 0.0)
        link = WorkerLink(stop, writer, heartbeat, os.getpid())
        process = self.ctx.Process(
            target=_run_worker, args=(self.target, link, self.target_kwargs), daemon=True
        )
        process.start()
        writer.close()  # the child holds the only writer: EOF on the reader once it is gone
        worker = _Worker(process, stop, reader, time.monotonic(), heartbeat)
        self.workers.append(worker)
        return worker

    def serving(self) -> list[_Worker]:
        return [w for w in self.workers if not w.retiring]

    def retire(self, worker: _Worker) -> None:
        """Start the replacement now; `worker` serves on until the replacement is ready."""
        if not worker.retiring:
            worker.retiring = True
            worker.replacement = self.spawn()

    def read_reports(self) -> None:
        for worker in self.workers:
            while worker.reports is not None and worker.reports.poll():
                try:
                    message = worker.reports.recv()
                except (EOFError, OSError):
                    worker.reports.close()
                    worker.reports = None
                    break
                if message == READY:
                    worker.ready = True
                    worker.ready_at = time.monotonic()
                    self.boot_times.learn(worker.ready_at - worker.started)
                elif message == RETIRING and not self.stopping:
                    logger.info("worker %s is at its request limit: replacing it", worker.process.pid)
                    self.retire(worker)

    def is_ready(self, worker: _Worker) -> bool:
        return worker.ready or time.monotonic() - worker.started >= self.boot_seconds

    def stop_replaced(self) -> None:
        for worker in self.workers:
            new = worker.replacement
            if new is not None and worker.stop_asked_at is None and self.is_ready(new):
                self.ask_to_stop(worker)

    def reap(self) -> None:
        for worker in [w for w in self.workers if w.process.exitcode is not None]:
            self.workers.remove(worker)
            worker.process.join()
            if worker.reports is not None:
                worker.reports.close()
            self.forget_metrics_of(worker)
            if self.stopping:
                continue
            code = worker.process.exitcode or 0
            if code > 0 and not self.is_ready(worker):
                logger.error("worker %s failed to boot (exit %s); stopping", worker.process.pid, code)
                self.exitcode = code
                self.stopping = True
                continue
            if worker.retiring:
                continue  # its replacement is already there
            respawned = self.spawn()  # recycled on its own, or killed while serving
            for other in self.workers:
                if other.replacement is worker:  # a replacement died before it was ready
                    other.replacement = respawned

    def drain(self, workers: list[_Worker]) -> None:
        for worker in workers:
            self.ask_to_stop(worker)
        deadline = time.monotonic() + self.graceful_timeout + KILL_BACKSTOP_SECONDS
        for worker in workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            self.forget_metrics_of(worker)

    def forget_metrics_of(self, worker: _Worker) -> None:
        if worker.process.pid is not None:
            forget_worker(worker.process.pid, self.metrics_dir)
