"""Granian profile: a Rust HTTP server driving the app through its ASGI interface.

Granian has no idle keep-alive timeout for HTTP/1 and recycles workers by age or
memory, not by request count: an explicitly set APP_KEEPALIVE_TIMEOUT and any
APP_MAX_REQUESTS are refused rather than silently ignored.

Granian has no worker heartbeat: APP_WORKER_TIMEOUT is deploy/heartbeat_files.py's,
a watcher thread in granian's main process reading beats each worker's loop writes.

Granian's own server runs with a few of its private steps replaced, each a carried patch
of deploy/granian_internals.py tested on granian 2.8: memory recycling by
deploy/memory_limit.py's rule, a replacement that serves before the worker it replaces
stops, a killed worker replaced however often, and at SIGTERM a 1012 close frame for every
open WebSocket. On another release the launcher warns once per patch and granian's own
behaviour stands.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import replace

from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
from granian.http import HTTP1Settings
from granian.log import LogLevels

from deploy import temporary
from deploy.common import SHM_DIR
from deploy.granian_internals import PATCHES, REPLACEMENT_SERVES_FIRST, granian_server, load_in_worker
from deploy.heartbeat_files import HeartbeatWatch
from deploy.profile import (
    NO_PING_TIMEOUT,
    NO_PINGS,
    HttpVersions,
    LaunchConfig,
    Native,
    Profile,
    Project,
    Refused,
    Support,
    assemble,
    lookup,
    none_if_zero,
)
from service.logs import ServerLoggers, log_config
from service.settings import Settings

RSS_SAMPLE_SECONDS = 0.5
# The longest a replacement is waited for before the worker it replaces stops anyway.
RESPAWN_BOUND_SECONDS = 30.0
# Without REPLACEMENT_SERVES_FIRST, how long granian waits before it stops the worker replaced: its default.
GRANIAN_RESPAWN_SECONDS = 3.5
# Share of APP_GRACEFUL_TIMEOUT the sessions get to end before granian's own stop begins; the rest
# is its own: in-flight requests, then the lifespan shutdown, before the main process kills the worker.
SESSIONS_SHARE_OF_GRACEFUL = 0.5
# granian's HTTP modes are `1`, `2` and `auto` (both). Under `2` and `auto` a connection that sends
# nothing stays open past APP_REQUEST_HEAD_TIMEOUT (measured on granian 2.8.9: `header_read_timeout`
# is HTTP/1's only), so granian serves HTTP/1.1 alone, as it did before the setting existed.
HTTP = HttpVersions(
    key="http",
    cleartext={frozenset({"http/1.1"}): HTTPModes.http1},
    tls={frozenset({"http/1.1"}): HTTPModes.http1},
    why=(
        "granian's HTTP/2 (its `2` and `auto` modes) leaves a silent connection open past "
        "APP_REQUEST_HEAD_TIMEOUT; it has no HTTP/3"
    ),
)
# Granian's own default minimum is TLS 1.3: the setting's default (1.2) is passed on as any value.
TLS_VERSIONS = {"1.2": SSLProtocols.tls12, "1.3": SSLProtocols.tls13}

# Where the server logs (service/logs.py configures them as the app's, its access lines silenced).
# `granian`: its configure_logging sets that one's level itself; ours keeps it in step.
LOGGERS = ServerLoggers(messages=("_granian", "granian"), access=("granian.access",))


def _off(value: int) -> bool:
    return value == 0


# Time a worker gets to finish in-flight requests once told to stop.
GRACEFUL = Native("workers_kill_timeout")
NO_REQUEST_COUNT = "granian recycles workers by lifetime or memory, not by request count; unset it"
HTTP1 = "http1_settings"  # built as granian's HTTP1Settings

DECLARATIONS: dict[str, Support] = {
    "asgi_app": Native("target"),
    "host": Native("address"),
    "port": Native("port"),
    "workers": Native("workers"),
    "log_level": Native("log_level", convert=LogLevels),
    "log_format": Native(
        "log_dictconfig",
        "service/logs.py's one dictConfig",
        derive=lambda settings: log_config(settings, LOGGERS),
    ),
    "keepalive_timeout": Refused(
        "granian's HTTP/1 keep-alive has no idle timeout; unset it or pick another profile"
    ),
    "request_head_timeout": Native(
        f"{HTTP1}.header_read_timeout", "in milliseconds", convert=lambda seconds: seconds * 1000
    ),
    "graceful_timeout": GRACEFUL,
    "max_requests": Refused(NO_REQUEST_COUNT, accepts=_off),
    "max_requests_jitter": Refused(NO_REQUEST_COUNT, accepts=_off),
    "worker_timeout": Project("worker_timeout", "deploy/heartbeat_files.py: beats each worker's loop writes"),
    "max_worker_memory": Native(  # MiB, as granian counts
        "workers_max_rss",
        "every 0.5 s; the replacement starts early enough to serve before the limit",
        convert=none_if_zero,
    ),
    "ws_ping_interval": Refused(f"granian {NO_PINGS}"),
    "ws_ping_timeout": Refused(f"granian {NO_PING_TIMEOUT}"),
    "tls_cert_file": Native("ssl_cert"),
    "tls_key_file": Native("ssl_key"),
    "tls_client_ca_file": Native("ssl_ca", "with `ssl_client_verify`"),
    "tls_min_version": Native("ssl_protocol_min", convert=TLS_VERSIONS.__getitem__),
}


def launch_config(settings: Settings) -> LaunchConfig:
    extras = {
        "interface": Interfaces.ASGI,  # with lifespan: /readyz depends on it
        "loop": Loops.uvloop,
        # Granian has no message-size limit of its own: the app closes with 1009 (service/api/).
        "websockets": True,
        "log_enabled": True,
        "log_access": False,  # the app writes access lines (service/access_log.py)
        "respawn_failed_workers": True,
        "rss_sample_interval": RSS_SAMPLE_SECONDS,  # MEMORY_LEAD's rule, or granian's own
        "rss_samples": 1,
        # With REPLACEMENT_SERVES_FIRST: the longest the worker being replaced waits for its replacement.
        "respawn_interval": (
            RESPAWN_BOUND_SECONDS if REPLACEMENT_SERVES_FIRST.applies() else GRANIAN_RESPAWN_SECONDS
        ),
        "url_path_prefix": None,  # root path is applied by the app, see service/app.py
        "reload": False,
        "env_files": None,
        "ssl_client_verify": settings.tls_client_ca_file is not None,
    }
    launch = assemble(settings, DECLARATIONS, extras=extras, http=HTTP)
    # Keep-alive on, with no idle timeout of granian's (APP_KEEPALIVE_TIMEOUT is refused).
    http1 = HTTP1Settings(keep_alive=True, **launch.server[HTTP1])
    return replace(launch, server={**launch.server, HTTP1: http1})


def run(launch: LaunchConfig) -> int:
    worker_timeout = launch.project.worker_timeout
    # Where workers leave their ready marks and, when hung workers are watched, their beats.
    marks = temporary.make(
        "asgi-deploy-workers-", "the workers' ready marks", SHM_DIR if SHM_DIR.is_dir() else None
    )
    server = granian_server(marks, launch.project.metrics_dir, **launch.server)
    if worker_timeout:
        HeartbeatWatch(marks, worker_timeout).start()
    sessions_bound = lookup(launch.server, GRACEFUL.key) * SESSIONS_SHARE_OF_GRACEFUL
    try:
        server.serve(
            target_loader=functools.partial(
                load_in_worker, os.getpid(), marks, bool(worker_timeout), sessions_bound
            )
        )
    finally:
        shutil.rmtree(marks, ignore_errors=True)
    return 0


PROFILE = Profile(
    name="granian",
    loggers=LOGGERS,
    summary="Granian, a Rust HTTP server, driving the app through its ASGI interface on uvloop",
    settings=DECLARATIONS,
    build=launch_config,
    serve=run,
    http=HTTP,
    carried=PATCHES,
)
