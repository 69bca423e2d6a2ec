"""Uvicorn profile.

Fast path: uvloop + httptools, chosen explicitly. With several workers on the
plain asyncio loop, uvicorn loses TCP_NODELAY on accepted sockets and every
small response waits ~44 ms for a delayed ACK (uvicorn issue #3149).
"""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from deploy.uvicorn_protocol import CONFIG_ATTRIBUTE, HeadTimeoutHttpToolsProtocol
from service.logs import log_config
from service.settings import Settings


def native_config(settings: Settings) -> dict[str, Any]:
    return {
        "app": settings.asgi_app,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": "uvloop",
        "http": HeadTimeoutHttpToolsProtocol,  # httptools, plus a request-head deadline
        "lifespan": "on",
        "log_level": settings.log_level,
        "log_config": log_config(settings),
        "access_log": False,  # the app writes access lines (service/middleware/access_log.py)
        "timeout_keep_alive": settings.keepalive_timeout,
        "timeout_graceful_shutdown": settings.graceful_timeout,
        "limit_max_requests": settings.max_requests or None,
        "limit_max_requests_jitter": settings.max_requests_jitter,
        # Proxy headers and root path are applied by the app itself (service/app.py),
        # identically on every server; uvicorn's own handling is switched off so that
        # FORWARDED_ALLOW_IPS in the environment cannot change anything.
        "proxy_headers": False,
        "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips),
        "root_path": "",
        "server_header": False,
        "env_file": None,
        "reload": False,
        "factory": False,
    }


def build_config(settings: Settings) -> uvicorn.Config:
    config = uvicorn.Config(**native_config(settings))
    setattr(config, CONFIG_ATTRIBUTE, settings.request_head_timeout)  # read by the protocol
    return config


def run(settings: Settings) -> int:
    config = build_config(settings)
    server = uvicorn.Server(config)
    if config.workers > 1 or settings.max_requests:
        # The supervisor also for one worker when workers are recycled: a lone
        # in-process server would simply exit after APP_MAX_REQUESTS requests.
        socket = config.bind_socket()
        Multiprocess(config, sockets=[socket]).run()
        return 0
    server.run()
    return 0 if server.started else 3
