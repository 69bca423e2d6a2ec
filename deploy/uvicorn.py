"""Uvicorn profile.

Fast path: uvloop + httptools, chosen explicitly. With several workers on the
plain asyncio loop, uvicorn loses TCP_NODELAY on accepted sockets and every
small response waits ~44 ms for a delayed ACK (uvicorn issue #3149).

Several workers (or recycled ones) run under deploy/supervisor.py instead of
uvicorn's Multiprocess: that one replaces a worker recycled after
limit_max_requests only once it has exited, so workers reaching their limit
together leave the socket without a worker for about a second.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from deploy.supervisor import READY, RETIRING, Supervisor, WorkerLink
from deploy.uvicorn_protocol import CONFIG_ATTRIBUTE, HeadTimeoutHttpToolsProtocol
from service.logs import log_config
from service.settings import Settings

logger = logging.getLogger("uvicorn.error")
# A new worker reports READY once it accepts; an old one it replaces stops then, or
# after this long without the report (a worker that failed to boot stops the server).
WORKER_BOOT_BOUND_SECONDS = 30.0


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
        **websocket_options(settings),
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


def websocket_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's WebSocket protocol, chosen explicitly ("auto" would depend on what happens to be
    installed), with the limits every profile shares; also what gunicorn's uvicorn workers run."""
    return {
        "ws": "websockets-sansio",
        "ws_max_size": settings.ws_max_message_bytes,  # beyond it: close 1009, as on every profile
        "ws_ping_interval": settings.ws_ping_interval,
        "ws_ping_timeout": settings.ws_ping_timeout,
        # Off on every profile: compression costs CPU per message and invites decompression bombs.
        "ws_per_message_deflate": False,
    }


def build_config(settings: Settings) -> uvicorn.Config:
    config = uvicorn.Config(**native_config(settings))
    setattr(config, CONFIG_ATTRIBUTE, settings.request_head_timeout)  # read by the protocol
    return config


def run(settings: Settings) -> int:
    config = build_config(settings)
    if config.workers == 1 and not settings.max_requests:
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    # The supervisor also for one worker when workers are recycled: a lone
    # in-process server would simply exit after APP_MAX_REQUESTS requests.
    sock = config.bind_socket()
    return Supervisor(
        workers=config.workers,
        target=_worker,
        target_kwargs={"config": config, "sockets": [sock]},
        graceful_timeout=settings.graceful_timeout,
        boot_seconds=WORKER_BOOT_BOUND_SECONDS,
        metrics_dir=settings.metrics_dir,
        close_sockets=sock.close,
    ).run()


def _worker(link: WorkerLink, *, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    config.configure_logging()  # a spawned process starts with logging unconfigured
    with contextlib.suppress(KeyboardInterrupt):
        SupervisedServer(config, link).run(sockets=sockets)


class SupervisedServer(uvicorn.Server):
    """A uvicorn worker that reports READY, announces recycling and stops when told.

    At its request limit it keeps serving and says RETIRING; the supervisor stops it
    once the replacement is ready, so the socket always has a worker accepting.
    """

    limit_max_requests = None  # replaces uvicorn's own exit at the limit (see on_tick)

    def __init__(self, config: uvicorn.Config, link: WorkerLink) -> None:
        super().__init__(config)
        self.link = link
        self.retiring = False
        limit, jitter = config.limit_max_requests, config.limit_max_requests_jitter
        self.recycle_after = None if limit is None else limit + random.randint(0, jitter)  # noqa: S311 - not secret

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.link.report(READY)

    async def on_tick(self, counter: int) -> bool:
        if self.link.stop_requested():
            self.should_exit = True
            stop_long_lived_connections()  # no signal reaches a supervised worker (service/realtime.py)
        elif (
            not self.retiring
            and self.recycle_after is not None
            and self.server_state.total_requests >= self.recycle_after
        ):
            self.retiring = True
            logger.info("Maximum request limit of %d reached; waiting for a replacement.", self.recycle_after)
            self.link.report(RETIRING)
        return await super().on_tick(counter)


def stop_long_lived_connections() -> None:
    """Tell the app's WebSockets and event streams the graceful stop has begun (service/realtime.py)."""
    from service.realtime import stop_all  # noqa: PLC0415 - imported by the app anyway; not by the launcher

    stop_all()
