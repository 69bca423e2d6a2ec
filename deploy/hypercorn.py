"""Hypercorn profile.

Fast path: the uvloop worker class. Measured on 2 cores, the asyncio worker
class let one of two workers accept all 64 connections of a load test; uvloop
spread them and doubled throughput.

Several workers run under our own supervisor loop rather than `hypercorn.run`'s:
on shutdown, hypercorn's loop SIGTERMs every worker as soon as the first one has
exited, and a worker process has no SIGTERM handler, so a busy worker dies with
its in-flight requests. Ours waits for each worker's own graceful stop (bounded
by APP_GRACEFUL_TIMEOUT) and replaces workers that exit while serving.
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
    ctx = get_context("spawn")
    sockets = config.create_sockets()
    shutdown_event = ctx.Event()
    stopping = False
    exitcode = 0

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        shutdown_event.set()

    # Workers inherit an ignored SIGINT: a Ctrl-C reaching the whole process
    # group must not kill them mid-request; the shutdown event stops them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started: dict[BaseProcess, float] = {}

    def spawn() -> None:
        process = ctx.Process(
            target=uvloop_worker,
            kwargs={"config": config, "shutdown_event": shutdown_event, "sockets": sockets},
        )
        process.daemon = True
        process.start()
        started[process] = time.monotonic()

    for _ in range(config.workers):
        spawn()
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    while not stopping:
        wait([p.sentinel for p in started], timeout=1.0)
        for process in [p for p in started if p.exitcode is not None]:
            lived = time.monotonic() - started.pop(process)
            process.join()
            _forget_metrics_of(process, metrics_dir)
            if stopping:
                continue
            if process.exitcode != 0 and lived < BOOT_FAILURE_SECONDS:
                exitcode = process.exitcode or 1
                request_stop()
            else:
                spawn()  # recycled after max_requests, or crashed while serving

    deadline = time.monotonic() + config.graceful_timeout + KILL_BACKSTOP_SECONDS
    for process in started:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in started:
        if process.exitcode is None:
            process.kill()
            process.join()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.close()
    return exitcode
