"""Hypercorn profile.

Fast path: the uvloop worker class. Measured on 2 cores, the asyncio worker
class let one of two workers accept all 64 connections of a load test; uvloop
spread them and doubled throughput.

Several workers run under our own supervisor rather than `hypercorn.run`'s loop:
on shutdown, hypercorn's loop SIGTERMs every worker as soon as the first one has
exited, and a worker process has no SIGTERM handler, so a busy worker dies with
its in-flight requests; it also has no SIGHUP handling and stops everything when
one worker dies. Ours waits for each worker's own graceful stop (bounded by
APP_GRACEFUL_TIMEOUT), replaces workers that die, and reloads on SIGHUP.
"""

from __future__ import annotations

import logging
import signal
import time
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from hypercorn.asyncio.run import uvloop_worker
from hypercorn.config import Config
from hypercorn.run import run as hypercorn_run

from deploy.common import bind_address
from service.logs import log_config
from service.settings import Settings

# A worker that dies this soon after it started is failing to boot: stop rather than crash-loop.
BOOT_FAILURE_SECONDS = 2.0
KILL_BACKSTOP_SECONDS = 2.0
# Time new workers get to import the app and start accepting during a SIGHUP reload.
RELOAD_BOOT_SECONDS = 2.0


def native_config(settings: Settings) -> dict[str, Any]:
    supervised = settings.workers > 1 or settings.max_requests > 0
    return {
        "application_path": settings.asgi_app,
        "bind": [bind_address(settings.host, settings.port)],
        # workers=0 serves in this process (it gets the signals directly); recycling
        # workers needs hypercorn's supervisor, even for a single worker.
        "workers": settings.workers if supervised else 0,
        "worker_class": "uvloop",
        "loglevel": settings.log_level.upper(),
        "logconfig_dict": log_config(settings),
        "accesslog": None,  # the app writes access lines (service/middleware/access_log.py)
        # A Logger (not "-") so hypercorn keeps the handlers logconfig_dict gives it.
        "errorlog": logging.getLogger("hypercorn.error"),
        "keep_alive_timeout": settings.keepalive_timeout,
        "graceful_timeout": settings.graceful_timeout,
        "max_requests": settings.max_requests or None,
        "max_requests_jitter": settings.max_requests_jitter,
        "root_path": "",  # applied by the app, see service/app.py
        "include_server_header": False,
        "use_reloader": False,
    }


def build_config(settings: Settings) -> Config:
    config = Config()
    for key, value in native_config(settings).items():
        setattr(config, key, value)
    return config


def run(settings: Settings) -> int:
    config = build_config(settings)
    if config.workers == 0:
        return hypercorn_run(config)
    return _supervise(config, settings.metrics_dir)


def _forget_metrics_of(process: BaseProcess, metrics_dir: Path | None) -> None:
    if process.pid is not None and metrics_dir is not None:
        from service.metrics import worker_exited  # noqa: PLC0415 - only once the metrics dir is exported

        worker_exited(process.pid, metrics_dir)


def _supervise(config: Config, metrics_dir: Path | None) -> int:
    return _Supervisor(config, metrics_dir).run()


class _Supervisor:
    """Keeps `config.workers` hypercorn workers, each with its own stop event.

    SIGTERM/SIGINT: every worker drains (bounded by the graceful timeout), then exit.
    SIGHUP: rolling reload; new workers start first, the old ones drain once the
    new ones had time to boot, so the listening socket is never without a worker.
    A worker that dies is replaced; one that exits with an error right after it
    started is failing to boot, and the server stops instead of crash-looping.
    """

    def __init__(self, config: Config, metrics_dir: Path | None) -> None:
        self.config = config
        self.metrics_dir = metrics_dir
        self.ctx = get_context("spawn")
        self.sockets = config.create_sockets()
        self.workers: dict[BaseProcess, tuple[Any, float]] = {}  # process -> (stop event, started)
        self.stopping = False
        self.reload_requested = False
        self.exitcode = 0

    def spawn(self) -> None:
        stop_event = self.ctx.Event()
        process = self.ctx.Process(
            target=uvloop_worker,
            kwargs={"config": self.config, "shutdown_event": stop_event, "sockets": self.sockets},
        )
        process.daemon = True
        process.start()
        self.workers[process] = (stop_event, time.monotonic())

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def request_reload(self, *_: object) -> None:
        self.reload_requested = True

    def run(self) -> int:
        # Workers inherit an ignored SIGINT: a Ctrl-C reaching the whole process
        # group must not kill them mid-request; their stop events stop them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _ in range(self.config.workers):
            self.spawn()
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        while not self.stopping:
            wait([p.sentinel for p in self.workers], timeout=0.2)
            self.reap()
            if self.reload_requested and not self.stopping:
                self.reload_requested = False
                self.rolling_reload()
        self.drain(list(self.workers))
        for sock in [*self.sockets.secure_sockets, *self.sockets.insecure_sockets]:
            sock.close()
        return self.exitcode

    def reap(self) -> None:
        for process in [p for p in self.workers if p.exitcode is not None]:
            _, started = self.workers.pop(process)
            process.join()
            _forget_metrics_of(process, self.metrics_dir)
            if self.stopping:
                continue
            failed_to_boot = (process.exitcode or 0) > 0 and time.monotonic() - started < BOOT_FAILURE_SECONDS
            if failed_to_boot:
                self.exitcode = process.exitcode or 1
                self.stopping = True
            else:
                self.spawn()  # recycled after max_requests, or killed while serving

    def rolling_reload(self) -> None:
        old = list(self.workers)
        for _ in old:
            self.spawn()
        time.sleep(RELOAD_BOOT_SECONDS)
        for process in old:
            stop_event, _ = self.workers.pop(process)
            stop_event.set()
        self.drain(old)

    def drain(self, processes: list[BaseProcess]) -> None:
        for process in processes:
            if process in self.workers:
                self.workers[process][0].set()
        deadline = time.monotonic() + self.config.graceful_timeout + KILL_BACKSTOP_SECONDS
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()
            _forget_metrics_of(process, self.metrics_dir)
