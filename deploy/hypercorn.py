"""Hypercorn profile.

Fast path: the uvloop worker class. Measured on 2 cores, the asyncio worker
class let one of two workers accept all 64 connections of a load test; uvloop
spread them and doubled throughput.

Several workers run under deploy/supervisor.py rather than `hypercorn.run`'s loop
(which kills busy workers on shutdown, ignores SIGHUP and stops when one worker dies).
"""

from __future__ import annotations

import logging
from typing import Any

from hypercorn.asyncio.run import uvloop_worker
from hypercorn.config import Config, Sockets
from hypercorn.run import run as hypercorn_run

from deploy.common import bind_address
from deploy.supervisor import Supervisor, WorkerLink
from service.logs import log_config
from service.settings import Settings

# Time a new worker gets to import the app and start accepting (it cannot report it):
# an old worker it replaces stops after that, and an error exit before it is a boot failure.
BOOT_SECONDS = 2.0


def native_config(settings: Settings) -> dict[str, Any]:
    supervised = settings.workers > 1 or settings.max_requests > 0
    return {
        "application_path": settings.asgi_app,
        "bind": [bind_address(settings.host, settings.port)],
        # workers=0 serves in this process (it gets the signals directly); recycling
        # workers needs the supervisor, even for a single worker.
        "workers": settings.workers if supervised else 0,
        "worker_class": "uvloop",
        "loglevel": settings.log_level.upper(),
        "logconfig_dict": log_config(settings),
        "accesslog": None,  # the app writes access lines (service/middleware/access_log.py)
        # A Logger (not "-") so hypercorn keeps the handlers logconfig_dict gives it.
        "errorlog": logging.getLogger("hypercorn.error"),
        # One timer covers both a connection's wait for its first request head and the idle
        # time between requests (it runs until a head is complete, whatever bytes arrive):
        # the shorter of the two settings, so neither deadline is ever exceeded.
        "keep_alive_timeout": min(settings.keepalive_timeout, settings.request_head_timeout),
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
    sockets = config.create_sockets()

    def close_sockets() -> None:
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()

    return Supervisor(
        workers=config.workers,
        target=_worker,
        target_kwargs={"config": config, "sockets": sockets},
        graceful_timeout=config.graceful_timeout,
        boot_seconds=BOOT_SECONDS,
        metrics_dir=settings.metrics_dir,
        close_sockets=close_sockets,
    ).run()


def _worker(link: WorkerLink, *, config: Config, sockets: Sockets) -> None:
    # hypercorn's worker cannot say when it is ready; the supervisor assumes it after BOOT_SECONDS.
    uvloop_worker(config=config, sockets=sockets, shutdown_event=link.stop)
