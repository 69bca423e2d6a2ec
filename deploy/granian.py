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

from deploy.common import SHM_DIR, UnsupportedSettingError, refuse_if_set
from deploy.heartbeat_files import ASGIApp, BeatingApp, HeartbeatWatch
from deploy.lifecycle import die_with_parent
from service.logs import log_config
from service.settings import Settings, env_name

RSS_SAMPLE_SECONDS = 1
RESPAWN_OVERLAP_SECONDS = 2.0  # a worker boots in well under a second; granian's default is 3.5


def refuse_unsupported(settings: Settings) -> None:
    if settings.max_requests:
        raise UnsupportedSettingError(
            "granian",
            env_name("max_requests"),
            "granian recycles workers by lifetime or memory, not by request count; unset it",
        )
    refuse_if_set(
        "granian",
        settings,
        "keepalive_timeout",
        "granian's HTTP/1 keep-alive has no idle timeout; unset it or pick another profile",
    )


def native_config(settings: Settings) -> dict[str, Any]:
    refuse_unsupported(settings)
    return {
        "target": settings.asgi_app,
        "address": settings.host,
        "port": settings.port,
        "interface": Interfaces.ASGI,  # with lifespan: /readyz depends on it
        "workers": settings.workers,
        "loop": Loops.uvloop,
        "http": HTTPModes.http1,
        "http1_settings": HTTP1Settings(
            keep_alive=True, header_read_timeout=settings.request_head_timeout * 1000
        ),
        "log_enabled": True,
        "log_level": LogLevels(settings.log_level),
        "log_dictconfig": log_config(settings),
        "log_access": False,  # the app writes access lines (service/middleware/access_log.py)
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
    }


def run(settings: Settings) -> int:
    server = Server(**native_config(settings))
    beats = None
    if settings.worker_timeout:
        beats = Path(
            tempfile.mkdtemp(prefix="asgi-deploy-heartbeats-", dir=SHM_DIR if SHM_DIR.is_dir() else None)
        )
        HeartbeatWatch(beats, settings.worker_timeout).start()
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
