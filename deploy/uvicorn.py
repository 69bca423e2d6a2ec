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

import asyncio
import contextlib
import logging
import random
import socket
from typing import Any, cast

import uvicorn
import uvloop
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE

from deploy.common import app_to_serve
from deploy.profile import (
    HTTP1_ONLY,
    INERT_PROXY_LIST,
    HttpVersions,
    LaunchConfig,
    Native,
    Profile,
    Project,
    Support,
    assemble,
    comma_separated,
    none_if_zero,
)
from deploy.supervisor import (
    APP_LIBRARIES,
    READY,
    RETIRING,
    SUPERVISED_SETTINGS,
    Supervisor,
    WorkerLink,
    needs_supervisor,
)
from deploy.tls_options import MINIMUM_VERSION_HOW, client_cert_reqs, context_hook, path_or_none
from deploy.uvicorn_internals import CONFIG_ATTRIBUTE, UVICORN_PATCHES, http_protocol
from deploy.worker_timing import ACCEPTED_SETTLE_SECONDS, WORKER_BOOT_BOUND_SECONDS
from service.logs import ServerLoggers, log_config
from service.settings import Settings

logger = logging.getLogger("uvicorn.error")
BEAT_SECONDS = 0.1  # a supervised worker's heartbeat, and how soon it sees a stop or its limit
# What a worker imports of uvicorn, imported once by the supervisor's fork server.
WORKER_LIBRARIES = (
    *APP_LIBRARIES,
    "uvicorn",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.websockets_sansio_impl",
)

# Where the server logs (service/logs.py configures them as the app's, its access lines silenced).
LOGGERS = ServerLoggers(messages=("uvicorn",), access=("uvicorn.access",))


# Shared with gunicorn's uvicorn workers (deploy/gunicorn.py), which run them too.
WEBSOCKET_SETTINGS: dict[str, Native] = {
    "ws_max_message_bytes": Native("ws_max_size", "beyond it: close 1009"),  # as on every profile
    "ws_ping_interval": Native("ws_ping_interval"),
    "ws_ping_timeout": Native("ws_ping_timeout"),
}
HEAD_DEADLINE_AT = Project(
    "request_head_timeout", "set on uvicorn's Config, read by deploy/uvicorn_internals.py's protocol"
)
GRACEFUL_AT = Native("timeout_graceful_shutdown")
MIN_VERSION_AT = Native("ssl_context_factory", MINIMUM_VERSION_HOW, derive=context_hook)

DECLARATIONS: dict[str, Support] = {
    "asgi_app": Native("app"),
    "host": Native("host"),
    "port": Native("port"),
    "workers": Native("workers", "more than one, or recycling: deploy/supervisor.py runs them"),
    "log_level": Native("log_level"),
    "log_format": Native(
        "log_config",
        "service/logs.py's one dictConfig",
        derive=lambda settings: log_config(settings, LOGGERS),
    ),
    "keepalive_timeout": Native("timeout_keep_alive"),
    "request_head_timeout": HEAD_DEADLINE_AT,
    "graceful_timeout": GRACEFUL_AT,
    "max_requests": Native(
        "limit_max_requests", "the supervisor starts the replacement first", convert=none_if_zero
    ),
    **SUPERVISED_SETTINGS,
    "max_requests_jitter": Native("limit_max_requests_jitter"),
    # uvicorn's own proxy handling is off (the app applies the headers, service/app.py), and
    # given the setting so that FORWARDED_ALLOW_IPS in the environment cannot change anything.
    "forwarded_allow_ips": Native("forwarded_allow_ips", INERT_PROXY_LIST, convert=comma_separated),
    **WEBSOCKET_SETTINGS,
    "tls_cert_file": Native("ssl_certfile", convert=path_or_none),
    "tls_key_file": Native("ssl_keyfile", convert=path_or_none),
    "tls_client_ca_file": Native("ssl_ca_certs", "with `ssl_cert_reqs` CERT_REQUIRED", convert=path_or_none),
    "tls_min_version": MIN_VERSION_AT,
}


def protocol_options() -> dict[str, Any]:
    """What uvicorn serves with, chosen explicitly ("auto" would depend on what happens to be
    installed); also what gunicorn's uvicorn workers run."""
    return {
        "loop": "uvloop",  # also what a supervised worker's loop is (uvloop.new_event_loop)
        "http": http_protocol(),  # httptools, plus a request-head deadline where tested
        "lifespan": "on",
        "ws": "websockets-sansio",
        # Off on every profile: compression costs CPU per message and invites decompression bombs.
        "ws_per_message_deflate": False,
        "proxy_headers": False,  # applied by the app, see service/app.py
        "server_header": False,
    }


def launch_config(settings: Settings) -> LaunchConfig:
    extras = {
        **protocol_options(),
        "access_log": False,  # the app writes access lines (service/access_log.py)
        "root_path": "",  # applied by the app, see service/app.py
        "ssl_cert_reqs": client_cert_reqs(settings),
        "env_file": None,
        "reload": False,
        "factory": False,
    }
    # In this process, uvicorn's own Server; several workers, or recycled or watched ones, ours.
    supervisor = settings.workers > 1 or needs_supervisor(settings)
    return assemble(
        settings, DECLARATIONS, extras=extras, http=UVICORN_HTTP, project={"supervisor": supervisor}
    )


# uvicorn's HTTP/1.1 protocols are all it has; gunicorn's uvicorn workers run them too.
UVICORN_HTTP = HttpVersions(
    key="",
    cleartext=HTTP1_ONLY,
    tls=HTTP1_ONLY,
    why="uvicorn's protocols speak HTTP/1.1 only, no HTTP/2 or HTTP/3",
)


def build_config(settings: Settings) -> uvicorn.Config:
    return server_config(launch_config(settings))


def server_config(launch: LaunchConfig) -> uvicorn.Config:
    """uvicorn's Config of the server's part, with the project's head deadline beside its options."""
    config = uvicorn.Config(**launch.server)
    # Not uvicorn's option: read from the Config by deploy/uvicorn_internals.py's protocol.
    setattr(config, CONFIG_ATTRIBUTE, launch.project.request_head_timeout)
    return config


def run(launch: LaunchConfig) -> int:
    config = server_config(launch)
    project = launch.project
    if not project.supervisor:
        config.app = app_to_serve(config.app)
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    sock = config.bind_socket()
    return Supervisor(
        server="uvicorn",
        workers=config.workers,
        target=_worker,
        target_kwargs={"config": config, "sockets": [sock]},
        graceful_timeout=config.timeout_graceful_shutdown or 0,
        boot_seconds=WORKER_BOOT_BOUND_SECONDS,
        metrics_dir=project.metrics_dir,
        close_sockets=sock.close,
        preload=WORKER_LIBRARIES,
        worker_timeout=project.worker_timeout or 0,
        max_memory_mib=project.max_worker_memory or 0,
    ).run()


def _worker(link: WorkerLink, *, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    config.configure_logging()  # a spawned process starts with logging unconfigured
    limit, jitter = config.limit_max_requests, config.limit_max_requests_jitter
    recycle_after = None if limit is None else limit + random.randint(0, jitter)  # noqa: S311 - not secret
    # The supervisor recycles the worker once its replacement serves; uvicorn would just exit.
    config.limit_max_requests = None
    app = app_to_serve(config.app)
    requests = RequestCount(cast(ASGIApp, app))
    config.app = requests
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_supervised(server, link, sockets, requests, recycle_after))


async def _serve_supervised(
    server: uvicorn.Server,
    link: WorkerLink,
    sockets: list[socket.socket],
    requests: RequestCount,
    recycle_after: int | None,
) -> None:
    """uvicorn's server, and beside it on the same loop the worker's side of deploy/supervisor.py."""
    watch = asyncio.ensure_future(_report_to_supervisor(server, link, requests, recycle_after))
    try:
        await server.serve(sockets=sockets)
    finally:
        watch.cancel()


async def _report_to_supervisor(
    server: uvicorn.Server, link: WorkerLink, requests: RequestCount, recycle_after: int | None
) -> None:
    """Beat, report READY once serving and RETIRING at the request limit, and stop when told.

    At its request limit the worker keeps serving and says RETIRING; the supervisor stops it
    once the replacement is ready, so the socket always has a worker accepting.
    """
    ready = retiring = stopping = False
    while True:
        link.beat()  # this loop runs every 0.1 s: the event loop is alive
        if not ready and server.started:
            ready = True
            link.report(READY)
        if not stopping and link.stop_requested():
            stopping = True
            # No signal reaches a supervised worker: the app's WebSockets and streams are told here.
            from service.sessions import begin_stop_of  # noqa: PLC0415 - the app imports it; the launcher need not

            begin_stop_of(requests.app)
            await _stop_accepting_then_settle(server)
            server.should_exit = True
        elif not retiring and recycle_after is not None and requests.total >= recycle_after:
            retiring = True
            logger.info("Maximum request limit of %d reached; waiting for a replacement.", recycle_after)
            link.report(RETIRING)
        await asyncio.sleep(BEAT_SECONDS)


async def _stop_accepting_then_settle(server: uvicorn.Server) -> None:
    """Stop taking connections, and give the ones just taken time to send their first request.

    uvicorn's shutdown closes every connection with no request in progress at once. One the
    worker accepted an instant before, whose request is still on its way, would be closed
    unanswered: a request lost while a worker is recycled (the others accept new connections
    meanwhile). Here such a request arrives and is answered before the shutdown begins.
    """
    for listener in server.servers:
        listener.close()
    await asyncio.sleep(ACCEPTED_SETTLE_SECONDS)


class RequestCount:
    """The app, counting the requests and WebSockets it is handed (ASGI, no server internals)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            self.total += 1
        await self.app(scope, receive, send)


PROFILE = Profile(
    name="uvicorn",
    loggers=LOGGERS,
    summary="Uvicorn on uvloop + httptools; several workers under deploy/supervisor.py",
    settings=DECLARATIONS,
    build=launch_config,
    serve=run,
    http=UVICORN_HTTP,
    carried=UVICORN_PATCHES,
)
