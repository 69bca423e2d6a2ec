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
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from granian._internal import load_target
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from deploy.common import SHM_DIR
from deploy.heartbeat_files import ASGIApp, BeatingApp, HeartbeatWatch
from deploy.lifecycle import die_with_parent
from deploy.profile import NO_PING_TIMEOUT, NO_PINGS, Native, Profile, Refused
from service.logs import log_config
from service.settings import Settings
from service.versions import require

require("granian", ">=2.8,<2.9", "deploy/granian.py (granian._internal.load_target, Server's target_loader)")

RSS_SAMPLE_SECONDS = 1
RESPAWN_OVERLAP_SECONDS = 2.0  # a worker boots in well under a second; granian's default is 3.5
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
        server.serve(target_loader=functools.partial(load_in_worker, os.getpid(), beats))
    finally:
        if beats is not None:
            shutil.rmtree(beats, ignore_errors=True)
    return 0


def load_in_worker(parent_pid: int, beats: Path | None, target: str) -> Any:
    """Runs in each spawned worker before it serves: die with the main process, load the app
    and, when hung workers are watched, make its event loop beat."""
    die_with_parent(parent_pid)
    app = load_target(target)
    return app if beats is None else BeatingApp(cast(ASGIApp, app), beats)


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
