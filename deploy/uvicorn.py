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

from deploy.common import import_app
from deploy.profile import HTTP1_ONLY, INERT_PROXY_LIST, HttpVersions, Native, Profile
from deploy.supervisor import (
    APP_LIBRARIES,
    READY,
    RETIRING,
    SUPERVISED_SETTINGS,
    SUPERVISOR_KEY,
    Supervisor,
    WorkerLink,
    needs_supervisor,
    supervisor_options,
)
from deploy.tls_options import MINIMUM_VERSION_HOW, client_cert_reqs, context_hook, path_or_none
from deploy.uvicorn_internals import CONFIG_ATTRIBUTE, UVICORN_PATCHES, http_protocol
from deploy.worker_timing import WORKER_BOOT_BOUND_SECONDS
from service.logs import ServerLoggers, log_config
from service.settings import Settings

logger = logging.getLogger("uvicorn.error")
# From a stopping worker's last accept to its shutdown: a connection accepted just before
# delivers its first request meanwhile (see _stop_accepting_then_settle).
ACCEPTED_SETTLE_SECONDS = 0.2
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


def native_config(settings: Settings) -> dict[str, Any]:
    return {
        "app": settings.asgi_app,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": "uvloop",  # also what a supervised worker's loop is (uvloop.new_event_loop)
        "http": http_protocol(),  # httptools, plus a request-head deadline where tested
        "lifespan": "on",
        "log_level": settings.log_level,
        "log_config": log_config(settings, LOGGERS),
        "access_log": False,  # the app writes access lines (service/access_log.py)
        **websocket_options(settings),
        "timeout_keep_alive": settings.keepalive_timeout,
        "timeout_graceful_shutdown": settings.graceful_timeout,
        "limit_max_requests": settings.max_requests or None,
        "limit_max_requests_jitter": settings.max_requests_jitter,
        CONFIG_ATTRIBUTE: settings.request_head_timeout,  # not uvicorn's: read by the protocol
        # Proxy headers and root path are applied by the app itself (service/app.py),
        # identically on every server; uvicorn's own handling is switched off so that
        # FORWARDED_ALLOW_IPS in the environment cannot change anything.
        "proxy_headers": False,
        "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips),
        "root_path": "",
        "server_header": False,
        **tls_options(settings),
        "env_file": None,
        "reload": False,
        "factory": False,
        SUPERVISOR_KEY: supervisor_options(settings),  # deploy/supervisor.py, when it runs the workers
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


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's certificate options (all None in cleartext); also what gunicorn's uvicorn workers run."""
    return {
        "ssl_certfile": path_or_none(settings.tls_cert_file),
        "ssl_keyfile": path_or_none(settings.tls_key_file),
        "ssl_ca_certs": path_or_none(settings.tls_client_ca_file),
        "ssl_cert_reqs": client_cert_reqs(settings),
        "ssl_context_factory": context_hook(settings),  # APP_TLS_MIN_VERSION
    }


# uvicorn's HTTP/1.1 protocols are all it has; gunicorn's uvicorn workers run them too.
UVICORN_HTTP = HttpVersions(
    key="",
    cleartext=HTTP1_ONLY,
    tls=HTTP1_ONLY,
    why="uvicorn's protocols speak HTTP/1.1 only, no HTTP/2 or HTTP/3",
)
TLS_SETTINGS = {
    "tls_cert_file": Native("ssl_certfile"),
    "tls_key_file": Native("ssl_keyfile"),
    "tls_client_ca_file": Native("ssl_ca_certs", "with `ssl_cert_reqs` CERT_REQUIRED"),
    "tls_min_version": Native("ssl_context_factory", MINIMUM_VERSION_HOW),
}


def build_config(settings: Settings) -> uvicorn.Config:
    native = native_config(settings)
    head_timeout = native.pop(CONFIG_ATTRIBUTE)
    native.pop(SUPERVISOR_KEY)
    config = uvicorn.Config(**native)
    setattr(config, CONFIG_ATTRIBUTE, head_timeout)  # read by deploy/uvicorn_internals.py's protocol
    return config


def run(settings: Settings) -> int:
    config = build_config(settings)
    if config.workers == 1 and not needs_supervisor(settings):
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    sock = config.bind_socket()
    return Supervisor(
        server="uvicorn",
        workers=config.workers,
        target=_worker,
        target_kwargs={"config": config, "sockets": [sock]},
        graceful_timeout=settings.graceful_timeout,
        boot_seconds=WORKER_BOOT_BOUND_SECONDS,
        metrics_dir=settings.metrics_dir,
        close_sockets=sock.close,
        preload=WORKER_LIBRARIES,
        **supervisor_options(settings),
    ).run()


def _worker(link: WorkerLink, *, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    config.configure_logging()  # a spawned process starts with logging unconfigured
    limit, jitter = config.limit_max_requests, config.limit_max_requests_jitter
    recycle_after = None if limit is None else limit + random.randint(0, jitter)  # noqa: S311 - not secret
    # The supervisor recycles the worker once its replacement serves; uvicorn would just exit.
    config.limit_max_requests = None
    app = import_app(config.app) if isinstance(config.app, str) else config.app
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
    settings={
        "asgi_app": Native("app"),
        "host": Native("host"),
        "port": Native("port"),
        "workers": Native("workers", "more than one, or recycling: deploy/supervisor.py runs them"),
        "log_level": Native("log_level"),
        "log_format": Native("log_config", "service/logs.py's one dictConfig"),
        "keepalive_timeout": Native("timeout_keep_alive"),
        "request_head_timeout": Native(
            CONFIG_ATTRIBUTE, "on Config, read by deploy/uvicorn_internals.py's protocol"
        ),
        "graceful_timeout": Native("timeout_graceful_shutdown"),
        "max_requests": Native("limit_max_requests", "the supervisor starts the replacement first"),
        **SUPERVISED_SETTINGS,
        "max_requests_jitter": Native("limit_max_requests_jitter"),
        "forwarded_allow_ips": Native("forwarded_allow_ips", INERT_PROXY_LIST),
        "ws_max_message_bytes": Native("ws_max_size", "beyond it: close 1009"),
        "ws_ping_interval": Native("ws_ping_interval"),
        "ws_ping_timeout": Native("ws_ping_timeout"),
        **TLS_SETTINGS,
    },
    build=native_config,
    serve=run,
    http=UVICORN_HTTP,
    carried=UVICORN_PATCHES,
)
