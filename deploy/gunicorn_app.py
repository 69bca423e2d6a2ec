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
from collections.abc import Callable, Mapping
from typing import Any

from gunicorn.app.base import BaseApplication

from deploy.carried import CarriedPatch
from deploy.common import SHM_DIR, binds
from deploy.gunicorn_hooks import child_exit, post_fork, post_worker_init, pre_fork, when_ready
from deploy.gunicorn_internals import STOPPED_WORKER_KILL, arbiter_class
from deploy.profile import (
    INERT_PROXY_LIST,
    HttpVersions,
    LaunchConfig,
    Native,
    Profile,
    Project,
    ProjectPart,
    Support,
    assemble,
    comma_separated,
)
from deploy.tls_options import MINIMUM_VERSION_HOW, client_cert_reqs, minimum_version_hook, path_or_none
from deploy.worker_timing import MEMORY_CHECK_SECONDS
from service.logs import ServerLoggers, log_config
from service.settings import Settings

GUNICORN = "gunicorn"  # gunicorn's own options: the part of the server's config handed to `cfg.set`
APP = Native("app", "resolved by GunicornApplication.load in each worker")
WORKER_MEMORY = Project(
    "max_worker_memory",
    f"each worker checks itself every {MEMORY_CHECK_SECONDS:g} s and stops gracefully, with SIGTERM",
)


def gunicorn_declarations(loggers: ServerLoggers) -> dict[str, Support]:
    """What both gunicorn profiles declare alike; each adds what its worker does with the rest."""
    bind = Native("bind", "`host:port`, IPv6 bracketed", derive=binds)
    options: dict[str, Native] = {
        "host": bind,
        "port": bind,
        "workers": Native("workers"),
        "log_level": Native("loglevel"),
        "log_format": Native(
            "logconfig_dict",
            "service/logs.py's one dictConfig",
            derive=lambda settings: log_config(settings, loggers),
        ),
        "keepalive_timeout": Native("keepalive"),
        "max_requests": Native("max_requests"),
        "max_requests_jitter": Native("max_requests_jitter"),
        "forwarded_allow_ips": Native("forwarded_allow_ips", INERT_PROXY_LIST, convert=comma_separated),
        # gunicorn's heartbeat: a worker whose loop has not notified the arbiter for this long
        # is killed (SIGABRT, then SIGKILL) and replaced; 0 turns it off, as APP_WORKER_TIMEOUT.
        "worker_timeout": Native("timeout", "gunicorn's heartbeat: SIGABRT, then SIGKILL"),
        "tls_cert_file": Native("certfile", convert=path_or_none),
        "tls_key_file": Native("keyfile", convert=path_or_none),
        "tls_client_ca_file": Native("ca_certs", "with `cert_reqs` CERT_REQUIRED", convert=path_or_none),
        "tls_min_version": Native(  # gunicorn's server hook
            "ssl_context", f"server hook: {MINIMUM_VERSION_HOW}", derive=minimum_version_hook
        ),
    }
    return {
        "asgi_app": APP,
        **{name: native.within(GUNICORN) for name, native in options.items()},
        "max_worker_memory": WORKER_MEMORY,
    }


def gunicorn_options(settings: Settings, worker_class: str | type[Any]) -> dict[str, Any]:
    """gunicorn's options no setting drives (or only beside its declared key)."""
    return {
        "worker_class": worker_class,
        "accesslog": None,  # the app writes access lines (service/access_log.py)
        "errorlog": "-",
        "worker_tmp_dir": str(SHM_DIR) if SHM_DIR.is_dir() else None,
        "proc_name": "asgi-deploy",
        "preload_app": False,
        "reuse_port": False,
        "control_socket_disable": True,  # it would write under $HOME: read-only in the image
        # gunicorn's public server hooks (deploy/gunicorn_hooks.py)
        "when_ready": when_ready,
        "pre_fork": pre_fork,
        "post_fork": post_fork,
        "post_worker_init": post_worker_init,
        "child_exit": child_exit,
        "cert_reqs": client_cert_reqs(settings),
    }


class GunicornApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn's options, plus what each worker reads beyond them: its worker's own options
    (`worker_overrides`) and the project's part (`project`: read by the hooks and the workers)."""

    def __init__(
        self,
        app_import: str,
        *,
        options: Mapping[str, Any],
        worker_overrides: Mapping[str, Any],
        project: ProjectPart,
    ) -> None:
        self.options = options
        self.worker_overrides = worker_overrides
        self.app_import = app_import
        self.project = project
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # `module:attribute`, as APP_ASGI_APP is validated; the other servers take the string itself.
        return pkgutil.resolve_name(self.app_import)

    def run(self) -> None:
        arbiter_class()(self).run()  # gunicorn's arbiter, or ours (deploy/gunicorn_internals.py)


def application_from(launch: LaunchConfig, worker_key: str | None = None) -> GunicornApplication:
    """The application of a launch config: `worker_key` names its worker's options, if it has any."""
    return GunicornApplication(
        launch.server[APP.key],
        options=launch.server[GUNICORN],
        worker_overrides=launch.server[worker_key] if worker_key else {},
        project=launch.project,
    )


def gunicorn_profile(
    name: str,
    summary: str,
    *,
    worker_key: str | None = None,
    worker_class: Callable[[], str | type[Any]],
    worker_settings: dict[str, Support],
    options: Callable[[Settings], dict[str, Any]],
    worker: Callable[[], dict[str, Any]] = dict,
    http: HttpVersions,
    loggers: ServerLoggers,
    carried: tuple[CarriedPatch, ...] = (),
) -> Profile:
    """A gunicorn profile: what both declare alike, plus what its worker does with the rest.

    The server's part of its launch config: `app`, gunicorn's options (GUNICORN: the shared
    declarations, also for a setting the worker declares as well, and `options`) and, when it has
    any, the worker's options (`worker_key`: `worker_settings` and `worker`). The project's part
    (each worker's memory watch, a carried head deadline) reaches the hooks and the workers on the
    GunicornApplication."""
    shared = gunicorn_declarations(loggers)

    def build(settings: Settings) -> LaunchConfig:
        extras = {GUNICORN: {**gunicorn_options(settings, worker_class()), **options(settings)}}
        if worker_key:
            extras[worker_key] = worker()
        return assemble(settings, shared, worker_settings, extras=extras, http=http)

    def serve(launch: LaunchConfig) -> int:
        application_from(launch, worker_key).run()
        return 0

    return Profile(
        name=name,
        summary=summary,
        settings={**shared, **worker_settings},
        build=build,
        serve=serve,
        http=http,
        carried=(STOPPED_WORKER_KILL, *carried),
        loggers=loggers,
    )
