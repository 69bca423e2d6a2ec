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
  worker that way (rolling reload). Workers that cannot report READY count as
  ready `boot_seconds` after they started.

Workers talk to the supervisor through a `WorkerLink`: a stop event it sets, and a
pipe the worker reports on.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

READY = "ready"
RETIRING = "retiring"

KILL_BACKSTOP_SECONDS = 2.0
POLL_SECONDS = 0.2

logger = logging.getLogger("deploy.supervisor")


@dataclass(frozen=True)
class WorkerLink:
    """The worker's end: `stop` is set by the supervisor, `reports` carries READY/RETIRING."""

    stop: Event
    reports: Connection

    def report(self, message: str) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            self.reports.send(message)

    def stop_requested(self) -> bool:
        return self.stop.is_set()


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    stop: Event
    reports: Connection | None
    started: float
    ready: bool = False
    retiring: bool = False  # asked to leave, or announced it will: replaced, not respawned
    replacement: _Worker | None = field(default=None, repr=False)


WorkerTarget = Callable[..., None]  # target(link, **kwargs), importable by the spawn start method


class Supervisor:
    def __init__(
        self,
        *,
        workers: int,
        target: WorkerTarget,
        target_kwargs: dict[str, Any],
        graceful_timeout: float,
        boot_seconds: float,
        metrics_dir: Path | None,
        close_sockets: Callable[[], None],
    ) -> None:
        self.count = workers
        self.target = target
        self.target_kwargs = target_kwargs
        self.graceful_timeout = graceful_timeout
        self.boot_seconds = boot_seconds
        self.metrics_dir = metrics_dir
        self.close_sockets = close_sockets
        self.ctx = get_context("spawn")
        self.workers: list[_Worker] = []
        self.stopping = False
        self.reload_requested = False
        self.exitcode = 0

    def run(self) -> int:
        # Workers inherit an ignored SIGINT: a Ctrl-C reaching the whole process
        # group must not kill them mid-request; their stop events stop them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _ in range(self.count):
            self.spawn()
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        while not self.stopping:
            waitables: list[Any] = [w.process.sentinel for w in self.workers]
            waitables += [w.reports for w in self.workers if w.reports is not None]
            wait(waitables, timeout=POLL_SECONDS)
            self.read_reports()
            self.reap()
            if self.reload_requested and not self.stopping:
                self.reload_requested = False
                logger.info("SIGHUP: replacing every worker")
                for worker in self.serving():
                    self.retire(worker)
            self.stop_replaced()
        self.drain(self.workers)
        # Freed now, each stop Event unlinks its semaphores. Left to interpreter exit they would
        # be reported as leaked: behind the drain window this process leaves by os._exit.
        self.workers.clear()
        self.close_sockets()
        return self.exitcode

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def request_reload(self, *_: object) -> None:
        self.reload_requested = True

    def spawn(self) -> _Worker:
        reader, writer = self.ctx.Pipe(duplex=False)
        stop = self.ctx.Event()
        process = self.ctx.Process(
            target=self.target, args=(WorkerLink(stop, writer),), kwargs=self.target_kwargs, daemon=True
        )
        process.start()
        writer.close()  # the child holds the only writer: EOF on the reader once it is gone
        worker = _Worker(process, stop, reader, time.monotonic())
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
                elif message == RETIRING and not self.stopping:
                    logger.info("worker %s is at its request limit: replacing it", worker.process.pid)
                    self.retire(worker)

    def is_ready(self, worker: _Worker) -> bool:
        return worker.ready or time.monotonic() - worker.started >= self.boot_seconds

    def stop_replaced(self) -> None:
        for worker in self.workers:
            new = worker.replacement
            if new is not None and not worker.stop.is_set() and self.is_ready(new):
                worker.stop.set()

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
            worker.stop.set()
        deadline = time.monotonic() + self.graceful_timeout + KILL_BACKSTOP_SECONDS
        for worker in workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            self.forget_metrics_of(worker)

    def forget_metrics_of(self, worker: _Worker) -> None:
        if worker.process.pid is not None and self.metrics_dir is not None:
            from service.metrics import worker_exited  # noqa: PLC0415 - only once the metrics dir is exported

            worker_exited(worker.process.pid, self.metrics_dir)
