"""Granian profile: a Rust HTTP server driving the app through its ASGI interface.

Granian has no idle keep-alive timeout for HTTP/1 and recycles workers by age or
memory, not by request count: an explicitly set APP_KEEPALIVE_TIMEOUT and any
APP_MAX_REQUESTS are refused rather than silently ignored.
"""

from __future__ import annotations

from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from deploy.common import UnsupportedSettingError, refuse_if_set, refuse_ws_ping
from service.logs import log_config
from service.settings import Settings, env_name


def refuse_unsupported(settings: Settings) -> None:
    refuse_ws_ping("granian", settings, interval=True, timeout=True)
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
        # Granian has no message-size limit of its own: the app closes with 1009 (service/api/realtime.py).
        "websockets": True,
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
        "url_path_prefix": None,  # root path is applied by the app, see service/app.py
        "reload": False,
        "env_files": None,
    }


def run(settings: Settings) -> int:
    Server(**native_config(settings)).serve()
    return 0
