"""gunicorn's public server hooks, as both gunicorn profiles set them (deploy/gunicorn_app.py).

- `when_ready` (arbiter): SIGINT drains like SIGTERM. gunicorn's own SIGINT is a quick,
  request-dropping stop; here the first SIGINT asks the arbiter for its graceful stop (SIGTERM),
  a second one for its quick stop (SIGQUIT).
- `pre_fork` (arbiter): what the arbiter holds is frozen before it forks a worker, so the worker's
  collections leave the pages they share unwritten (deploy/worker_gc.py).
- `post_fork` (worker): the worker dies with the arbiter.
- `post_worker_init` (worker): the worker's heap settled for serving (deploy/worker_gc.py), once
  it has loaded the app; APP_MAX_WORKER_MEMORY. Each worker checks its own resident
  memory with deploy/memory_limit.py's rule and, before it would pass the limit, stops itself
  the way the arbiter stops a worker: SIGTERM, gunicorn's graceful stop (it stops accepting,
  finishes what it has, exits). The arbiter then replaces it while the others serve, as for
  APP_MAX_REQUESTS.
- `child_exit` (arbiter): a dead worker's live metric gauges are dropped.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from deploy import worker_gc
from deploy.lifecycle import die_with_parent
from deploy.memory_limit import MIB, MemoryWatch
from deploy.metrics_dir import forget_worker
from deploy.worker_timing import MEMORY_CHECK_SECONDS

# A worker told to stop takes requests until its loop next looks (gunicorn's ASGI worker: once a
# second): retire it when it would reach the limit within that.
MEMORY_LEAD_SECONDS = 1.0


def when_ready(server: Any) -> None:
    """The arbiter has installed its signal handlers: SIGINT now asks it for a graceful stop."""
    interrupted = False

    def drain(_signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupted
        os.kill(os.getpid(), signal.SIGQUIT if interrupted else signal.SIGTERM)
        interrupted = True

    signal.signal(signal.SIGINT, drain)


def pre_fork(server: Any, worker: Any) -> None:
    """The arbiter's heap frozen before it forks a worker (deploy/worker_gc.py)."""
    worker_gc.freeze_for_forking()


def post_fork(server: Any, worker: Any) -> None:
    """Each worker dies with the arbiter: no orphan keeps serving (and the port) after a SIGKILL."""
    die_with_parent(worker.ppid)


def post_worker_init(worker: Any) -> None:
    """The worker has loaded the app: its heap is settled for serving (deploy/worker_gc.py). With
    APP_MAX_WORKER_MEMORY, the worker retires itself before it passes the limit."""
    worker_gc.settle()
    limit_mib = worker.app.project.max_worker_memory  # the launch's, on GunicornApplication
    if limit_mib:
        watch_own_memory(limit_mib * MIB, lambda why: _retire(worker, why))


def _retire(worker: Any, why: str) -> None:
    worker.log.info("worker %s %s; replacing it", worker.pid, why)
    os.kill(os.getpid(), signal.SIGTERM)


def watch_own_memory(
    limit_bytes: int,
    retire: Callable[[str], None],
    interval: float = MEMORY_CHECK_SECONDS,
    stop: threading.Event | None = None,
) -> threading.Thread:
    """A daemon thread that calls `retire(why)` once, when this process would reach the limit
    (or ends when `stop` is set)."""
    pid = os.getpid()
    stopped = stop or threading.Event()

    def watch() -> None:
        memory = MemoryWatch(limit_bytes)
        while True:
            found = memory.to_retire([pid], MEMORY_LEAD_SECONDS)
            if found:
                retire(found[0][1])
                return
            if stopped.wait(interval):
                return

    thread = threading.Thread(target=watch, name="memory-watch", daemon=True)
    thread.start()
    return thread


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live metric gauges, so in-progress counts stay true after a crash."""
    forget_worker(worker.pid, server.app.project.metrics_dir)
