"""What both gunicorn profiles share: the options, the server hooks and the application object.

The gunicorn profile (uvicorn workers, deploy/gunicorn.py) and the gunicorn-asgi
profile (gunicorn's own ASGI worker, deploy/gunicorn_asgi.py) differ in the worker
only. This module imports neither worker, so a gunicorn-asgi process never loads
uvicorn and click (about 3 MB of RSS in each worker).

The hooks are gunicorn's public server hooks (deploy/gunicorn_hooks.py); what needs
gunicorn's internals is in deploy/gunicorn_internals.py, used only within its tested range.

Every gunicorn setting that matters is set explicitly, so gunicorn's own
environment fallbacks (`WEB_CONCURRENCY`, `PORT`, `FORWARDED_ALLOW_IPS`,
`GUNICORN_CMD_ARGS`) never win over `Settings`.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from deploy.carried import CarriedPatch
from deploy.common import SHM_DIR, bind_address
from deploy.gunicorn_hooks import child_exit, post_fork, post_worker_init, when_ready
from deploy.gunicorn_internals import STOPPED_WORKER_KILL, arbiter_class
from deploy.profile import INERT_PROXY_LIST, HttpVersions, Native, Profile, Support
from deploy.tls_options import MINIMUM_VERSION_HOW, client_cert_reqs, minimum_version_hook, path_or_none
from deploy.worker_timing import MEMORY_CHECK_SECONDS
from service.logs import ServerLoggers, log_config
from service.settings import Settings


def gunicorn_options(
    settings: Settings, worker_class: str | type[Any], loggers: ServerLoggers
) -> dict[str, Any]:
    return {
        "bind": [bind_address(settings.host, settings.port)],
        "workers": settings.workers,
        "worker_class": worker_class,
        "loglevel": settings.log_level,
        "logconfig_dict": log_config(settings, loggers),
        "accesslog": None,  # the app writes access lines (service/access_log.py)
        "errorlog": "-",
        "keepalive": settings.keepalive_timeout,
        # gunicorn's ASGI worker drains this long itself; the uvicorn worker's profile adds
        # a backstop (deploy/gunicorn.py).
        "graceful_timeout": settings.graceful_timeout,
        "max_requests": settings.max_requests,
        "max_requests_jitter": settings.max_requests_jitter,
        "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips),
        "worker_tmp_dir": str(SHM_DIR) if SHM_DIR.is_dir() else None,
        "proc_name": "asgi-deploy",
        "preload_app": False,
        "reuse_port": False,
        "control_socket_disable": True,  # it would write under $HOME: read-only in the image
        # gunicorn's public server hooks (deploy/gunicorn_hooks.py)
        "when_ready": when_ready,
        "post_fork": post_fork,
        "post_worker_init": post_worker_init,
        "child_exit": child_exit,
        # gunicorn's heartbeat: a worker whose loop has not notified the arbiter for this long
        # is killed (SIGABRT, then SIGKILL) and replaced; 0 turns it off, as APP_WORKER_TIMEOUT.
        "timeout": settings.worker_timeout,
        **tls_options(settings),
    }


def tls_options(settings: Settings) -> dict[str, Any]:
    """gunicorn's certificate options (None in cleartext); its uvicorn workers read them too."""
    return {
        "certfile": path_or_none(settings.tls_cert_file),
        "keyfile": path_or_none(settings.tls_key_file),
        "ca_certs": path_or_none(settings.tls_client_ca_file),
        "cert_reqs": client_cert_reqs(settings),
        "ssl_context": minimum_version_hook(settings),  # gunicorn's server hook: APP_TLS_MIN_VERSION
    }


class GunicornApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn's options, plus what each worker reads beyond them (`worker_overrides`)."""

    def __init__(
        self,
        app_import: str,
        *,
        options: dict[str, Any],
        worker_overrides: dict[str, Any],
        metrics_dir: Path | None,
        max_worker_memory: int,
    ) -> None:
        self.options = options
        self.worker_overrides = worker_overrides
        self.app_import = app_import
        self.metrics_dir = metrics_dir
        self.max_worker_memory = max_worker_memory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # `module:attribute`, as APP_ASGI_APP is validated; the other servers take the string itself.
        return pkgutil.resolve_name(self.app_import)

    def run(self) -> None:
        arbiter_class()(self).run()  # gunicorn's arbiter, or ours (deploy/gunicorn_internals.py)


def gunicorn_native_config(
    settings: Settings, options: dict[str, Any], worker_key: str, worker: dict[str, Any]
) -> dict[str, Any]:
    """A gunicorn profile's complete native config: gunicorn's options, its worker's part, ours."""
    return {
        "app": settings.asgi_app,  # resolved by GunicornApplication.load in each worker
        "gunicorn": options,
        worker_key: worker,
        "worker_memory": {"max_mib": settings.max_worker_memory},  # read by each worker's memory watch
    }


def application_from(native: dict[str, Any], worker_key: str, settings: Settings) -> GunicornApplication:
    return GunicornApplication(
        native["app"],
        options=native["gunicorn"],
        worker_overrides=native[worker_key],
        metrics_dir=settings.metrics_dir,
        max_worker_memory=native["worker_memory"]["max_mib"],
    )


# What both gunicorn profiles declare alike; each adds what its worker does with the rest.
GUNICORN_SETTINGS: dict[str, Support] = {
    "asgi_app": Native("app", "resolved by GunicornApplication.load in each worker"),
    "host": Native("gunicorn.bind", "`host:port`, IPv6 bracketed"),
    "port": Native("gunicorn.bind"),
    "workers": Native("gunicorn.workers"),
    "log_level": Native("gunicorn.loglevel"),
    "log_format": Native("gunicorn.logconfig_dict", "service/logs.py's one dictConfig"),
    "keepalive_timeout": Native("gunicorn.keepalive"),
    "max_requests": Native("gunicorn.max_requests"),
    "max_requests_jitter": Native("gunicorn.max_requests_jitter"),
    "forwarded_allow_ips": Native("gunicorn.forwarded_allow_ips", INERT_PROXY_LIST),
    "worker_timeout": Native("gunicorn.timeout", "gunicorn's heartbeat: SIGABRT, then SIGKILL"),
    "max_worker_memory": Native(
        "worker_memory.max_mib",
        f"each worker checks itself every {MEMORY_CHECK_SECONDS:g} s and stops gracefully, with SIGTERM",
    ),
    "tls_cert_file": Native("gunicorn.certfile"),
    "tls_key_file": Native("gunicorn.keyfile"),
    "tls_client_ca_file": Native("gunicorn.ca_certs", "with `cert_reqs` CERT_REQUIRED"),
    "tls_min_version": Native("gunicorn.ssl_context", f"server hook: {MINIMUM_VERSION_HOW}"),
}


def gunicorn_profile(
    name: str,
    summary: str,
    build: Callable[[Settings], dict[str, Any]],
    application: Callable[[Settings], GunicornApplication],
    worker_settings: dict[str, Support],
    *,
    http: HttpVersions,
    loggers: ServerLoggers,
    carried: tuple[CarriedPatch, ...] = (),
) -> Profile:
    """A gunicorn profile: what both declare alike, plus what its worker does with the rest."""

    def serve(settings: Settings) -> int:
        application(settings).run()
        return 0

    return Profile(
        name=name,
        summary=summary,
        settings={**GUNICORN_SETTINGS, **worker_settings},
        build=build,
        serve=serve,
        http=http,
        carried=(STOPPED_WORKER_KILL, *carried),
        loggers=loggers,
    )
