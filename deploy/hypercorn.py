"""Hypercorn profile.

Fast path: the uvloop worker class. Measured on 2 cores, the asyncio worker
class let one of two workers accept all 64 connections of a load test; uvloop
spread them and doubled throughput.

Several workers run under deploy/supervisor.py rather than `hypercorn.run`'s loop
(which kills busy workers on shutdown, ignores SIGHUP and stops when one worker dies),
each through hypercorn's public `serve()`. Only public names of hypercorn are used here;
its private hooks, and their tested ranges, are in deploy/hypercorn_internals.py.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import logging
import signal
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any

import uvloop
from hypercorn.asyncio import serve
from hypercorn.config import Config, Sockets

from deploy import hypercorn_internals
from deploy.common import app_to_serve, binds
from deploy.profile import (
    NO_PING_TIMEOUT,
    HttpVersions,
    LaunchConfig,
    Native,
    Profile,
    Refused,
    Support,
    assemble,
    none_if_zero,
)
from deploy.reporting_app import ReportingApp, recycle_after
from deploy.supervisor import (
    APP_LIBRARIES,
    SUPERVISED_SETTINGS,
    Supervisor,
    WorkerLink,
    needs_supervisor,
)
from deploy.tls_options import client_cert_reqs, path_or_none
from deploy.worker_timing import WORKER_BOOT_BOUND_SECONDS
from service.logs import ServerLoggers, log_config
from service.settings import Settings
from service.tls import minimum_version

# What a worker imports of hypercorn, imported once by the supervisor's fork server.
WORKER_LIBRARIES = (*APP_LIBRARIES, "hypercorn.asyncio", "hypercorn.config", "wsproto")
# How often a worker looks at its stop flag (hypercorn polls its own shutdown event as often).
STOP_POLL_SECONDS = 0.1
# Not hypercorn's: read by ServiceConfig.create_ssl_context.
MIN_VERSION_ATTRIBUTE = "tls_minimum_version"
# hypercorn picks the protocol per connection: h2c or HTTP/1.1 in cleartext (always both), h2 over
# TLS when its ALPN list offers it and the client picks it, HTTP/1.1 otherwise; h3 over QUIC on the
# same port number in UDP (`quic_bind`, see _quic_bind), advertised by an `alt-svc` header over TCP.
H3 = "h3"
H3_NEEDS = "aioquic"  # the QUIC library, the project's `http3` extra
HTTP_WHY = (
    "hypercorn answers both HTTP/1.1 and h2c in cleartext and HTTP/1.1 to a TLS client that does "
    "not pick h2, whatever is asked; h3 (QUIC over UDP) only when asked: it needs the `http3` extra "
    "and one process"
)


def _h3_limits(settings: Settings, versions: frozenset[str]) -> str | None:
    """Why other settings rule out serving `versions` (None when they do not)."""
    if H3 not in versions:
        return None
    if importlib.util.find_spec(H3_NEEDS) is None:
        return f"h3 needs {H3_NEEDS}: install the project's `http3` extra (uv sync --extra http3)"
    if not hypercorn_internals.H3_LATE_BODY.in_range():
        return (
            f"h3 needs {hypercorn_internals.MODULE}'s patch, tested on hypercorn"
            f"{hypercorn_internals.H3_LATE_BODY.tested}: without it a request body arriving after its "
            "answer stops HTTP/3 for the whole process"
        )
    if _worker_count(settings) != 0:
        return (
            "h3 needs hypercorn in one process (APP_WORKERS=1, APP_WORKER_TIMEOUT=0, APP_MAX_REQUESTS=0, "
            "APP_MAX_WORKER_MEMORY=0): supervised workers and their replacements share the UDP port, and "
            "a QUIC datagram reaching another process breaks its connection"
        )
    if settings.tls_client_ca_file is not None:
        return "h3 with APP_TLS_CLIENT_CA_FILE: hypercorn's QUIC does not ask for client certificates"
    return None


HTTP = HttpVersions(
    key="alpn_protocols",
    cleartext={frozenset({"http/1.1", "h2c"}): ["h2", "http/1.1"]},  # no ALPN in cleartext: inert
    tls={
        frozenset({"http/1.1"}): ["http/1.1"],
        frozenset({"http/1.1", "h2"}): ["h2", "http/1.1"],
        frozenset({"http/1.1", H3}): ["http/1.1"],
        frozenset({"http/1.1", "h2", H3}): ["h2", "http/1.1"],
    },
    why=HTTP_WHY,
    # Not by default: it needs one process (the default is a worker per CPU), and a UDP port that the
    # deployment must open too, or clients told by alt-svc try QUIC in vain.
    only_when_asked=frozenset({H3}),
    limits=_h3_limits,
)


def _quic_bind(settings: Settings) -> list[str]:
    """The UDP binds of h3: the TCP binds' addresses (hypercorn opens them with TLS only)."""
    return binds(settings) if H3 in HTTP.served(settings) else []


# Where the server logs (service/logs.py configures them as the app's, its access lines silenced).
LOGGERS = ServerLoggers(messages=("hypercorn.error",), access=("hypercorn.access",))


def _worker_count(settings: Settings) -> int:
    # workers=0 serves in this process (it gets the signals directly); recycling or
    # watching workers needs the supervisor, even for a single worker.
    return settings.workers if settings.workers > 1 or needs_supervisor(settings) else 0


def _idle_timer(settings: Settings) -> float:
    # One timer covers both a connection's wait for its first request head and the idle
    # time between requests (it runs until a head is complete, whatever bytes arrive):
    # the shorter of the two settings, so neither deadline is ever exceeded.
    return min(settings.keepalive_timeout, settings.request_head_timeout)


IDLE_TIMER = "keep_alive_timeout"
BIND = Native("bind", "`host:port`, IPv6 bracketed", derive=binds)

DECLARATIONS: dict[str, Support] = {
    "asgi_app": Native("application_path"),
    "host": BIND,
    "port": BIND,
    "workers": Native("workers", "0 (in process) for one worker without recycling", derive=_worker_count),
    "log_level": Native("loglevel", "upper case", convert=str.upper),
    "log_format": Native(
        "logconfig_dict",
        "service/logs.py's one dictConfig",
        derive=lambda settings: log_config(settings, LOGGERS),
    ),
    "keepalive_timeout": Native(
        IDLE_TIMER, "one idle timer: the shorter with the head one", derive=_idle_timer
    ),
    "request_head_timeout": Native(
        IDLE_TIMER,
        "one idle timer: the shorter with keep-alive; the TLS handshake gets as long",
        derive=_idle_timer,
    ),
    "graceful_timeout": Native("graceful_timeout"),
    "max_requests": Native(
        "max_requests", "the supervisor starts the replacement first", convert=none_if_zero
    ),
    **SUPERVISED_SETTINGS,
    "ws_max_message_bytes": Native("websocket_max_message_size", "beyond it: close 1009"),
    "ws_ping_interval": Native("websocket_ping_interval"),
    "ws_ping_timeout": Refused(f"hypercorn {NO_PING_TIMEOUT}"),
    "max_requests_jitter": Native("max_requests_jitter"),
    "tls_cert_file": Native("certfile", convert=path_or_none),
    "tls_key_file": Native("keyfile", convert=path_or_none),
    "tls_client_ca_file": Native("ca_certs", "with `verify_mode` CERT_REQUIRED", convert=path_or_none),
    "tls_min_version": Native(
        MIN_VERSION_ATTRIBUTE, "on ServiceConfig, whose `create_ssl_context` sets `minimum_version`"
    ),
}


def launch_config(settings: Settings) -> LaunchConfig:
    extras = {
        "worker_class": "uvloop",
        "accesslog": None,  # the app writes access lines (service/access_log.py)
        # A Logger (not "-") so hypercorn keeps the handlers logconfig_dict gives it.
        "errorlog": logging.getLogger("hypercorn.error"),
        # With TLS, the head deadline starts once the handshake is done; this bounds the handshake.
        "ssl_handshake_timeout": settings.request_head_timeout,
        "root_path": "",  # applied by the app, see service/app.py
        "include_server_header": False,
        "use_reloader": False,
        "verify_mode": client_cert_reqs(settings) if settings.tls_enabled else None,
        "quic_bind": _quic_bind(settings),
    }
    return assemble(settings, DECLARATIONS, extras=extras, http=HTTP)


class ServiceConfig(Config):
    """hypercorn's Config, whose public `create_ssl_context` also sets APP_TLS_MIN_VERSION
    (hypercorn's own context is fixed at TLS 1.2)."""

    tls_minimum_version = "1.2"

    def create_ssl_context(self) -> SSLContext | None:
        context: SSLContext | None = super().create_ssl_context()
        if context is not None:
            context.minimum_version = minimum_version(self.tls_minimum_version)
        return context


def build_config(settings: Settings) -> Config:
    return server_config(launch_config(settings))


def server_config(launch: LaunchConfig) -> Config:
    """hypercorn's Config of the server's part."""
    config = ServiceConfig()
    for key, value in launch.server.items():
        setattr(config, key, value)
    return config


def run(launch: LaunchConfig) -> int:
    config = server_config(launch)
    project = launch.project
    hypercorn_internals.install(h3=bool(config.quic_bind))
    if config.workers == 0:
        app = app_to_serve(config.application_path)
        serve_in_process(app, single_worker(config, config.bind))
        return 0
    sockets = config.create_sockets()

    def close_sockets() -> None:
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()

    return Supervisor(
        server="hypercorn",
        workers=config.workers,
        target=_worker,
        target_kwargs={"config": config, "sockets": sockets},
        graceful_timeout=config.graceful_timeout,
        boot_seconds=WORKER_BOOT_BOUND_SECONDS,
        metrics_dir=project.metrics_dir,
        close_sockets=close_sockets,
        preload=WORKER_LIBRARIES,
        worker_timeout=project.worker_timeout or 0,
        max_memory_mib=project.max_worker_memory or 0,
    ).run()


def _worker(link: WorkerLink, *, config: Config, sockets: Sockets) -> None:
    """One supervised worker: the app, wrapped to report to the supervisor (deploy/reporting_app.py),
    on the sockets the supervisor opened (hypercorn's `fd://` binds), until the supervisor stops it.

    hypercorn's own request limit is off: at its limit the worker says RETIRING and serves on
    (ReportingApp) instead of exiting before its replacement serves."""
    # A spawned process: the launcher's patch is not inherited. (h3 is served in one process only.)
    hypercorn_internals.install(h3=bool(config.quic_bind))
    limit = recycle_after(config.max_requests, config.max_requests_jitter)
    app = ReportingApp(app_to_serve(config.application_path), link, limit)
    # serve() owns the fds now; with TLS, hypercorn serves `bind` over TLS and `insecure_bind` in cleartext.
    secure = [f"fd://{sock.detach()}" for sock in sockets.secure_sockets]
    insecure = [f"fd://{sock.detach()}" for sock in sockets.insecure_sockets]
    worker = single_worker(config, secure) if config.ssl_enabled else single_worker(config, insecure)
    if config.ssl_enabled:
        worker.insecure_bind = insecure
    serve_app(app, worker, shutdown_trigger=lambda: stop_requested(link, app), supervised=True)


def single_worker(config: Config, binds: list[str]) -> Config:
    """The config one process serves with: its binds, and no request limit or worker count of hypercorn's."""
    worker = copy.copy(config)
    worker.bind = binds
    worker.workers = 1  # what serve() expects: it runs one worker, here
    worker.max_requests = None
    return worker


def event_loop_factory(
    config: Config, *, supervised: bool = False
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `worker_class` names: uvloop's (in a supervised worker, the one that keeps the
    listeners hypercorn makes, hypercorn_internals.ACCEPT_SETTLE), or asyncio's default (None)."""
    if config.worker_class != "uvloop":
        return None
    return hypercorn_internals.worker_loop if supervised else uvloop.new_event_loop


def serve_app(
    app: Any,
    config: Config,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    *,
    supervised: bool = False,
) -> None:
    """hypercorn's public serve(), on the event loop `worker_class` names; without a trigger it
    stops on SIGTERM or SIGINT."""
    with asyncio.Runner(loop_factory=event_loop_factory(config, supervised=supervised)) as runner:
        runner.run(serve(app, config, shutdown_trigger=shutdown_trigger, mode="asgi"))


def serve_in_process(app: Any, config: Config) -> None:
    """In this process, stopped by SIGTERM or SIGINT: by hypercorn's serve() itself, or with h3 by
    the same signals handled here, so the QUIC listeners are woken while it stops
    (hypercorn_internals.H3_PROMPT_STOP)."""
    if not config.quic_bind:
        serve_app(app, config)
        return
    with asyncio.Runner(loop_factory=event_loop_factory(config)) as runner:
        loop = runner.get_loop()
        stop = asyncio.Event()
        waking: list[asyncio.Task[None]] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)  # before the app's lifespan chains onto them

        async def stopped() -> None:
            await stop.wait()
            waking.append(loop.create_task(hypercorn_internals.wake_quic_listeners(list(config.quic_bind))))

        runner.run(serve(app, config, shutdown_trigger=stopped, mode="asgi"))


async def stop_requested(link: WorkerLink, app: object) -> None:
    """hypercorn's shutdown trigger: returns once the supervisor asks the worker to stop, having
    stopped accepting and let what was just accepted settle (hypercorn_internals.ACCEPT_SETTLE), and
    told the app's long-lived connections (no signal reaches a supervised worker)."""
    while not link.stop_requested():  # noqa: ASYNC110 - a byte another process sets: polled
        await asyncio.sleep(STOP_POLL_SECONDS)
    await hypercorn_internals.settle_accepted()
    from service.sessions import begin_stop_of  # noqa: PLC0415 - imported by the app anyway; not by the launcher

    begin_stop_of(app)


PROFILE = Profile(
    name="hypercorn",
    loggers=LOGGERS,
    summary="Hypercorn's uvloop worker; several workers under deploy/supervisor.py",
    settings=DECLARATIONS,
    build=launch_config,
    serve=run,
    http=HTTP,
    carried=hypercorn_internals.CARRIED,
)
