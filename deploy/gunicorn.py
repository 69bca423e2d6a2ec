"""Gunicorn profile: gunicorn supervises, Uvicorn workers (the maintained `uvicorn-worker`) serve.

Every gunicorn setting that matters is set explicitly, so gunicorn's own
environment fallbacks (`WEB_CONCURRENCY`, `PORT`, `FORWARDED_ALLOW_IPS`,
`GUNICORN_CMD_ARGS`) never win over `Settings`.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from uvicorn.importer import import_from_string
from uvicorn_worker import UvicornWorker

from deploy.common import SHM_DIR, bind_address
from deploy.uvicorn_protocol import CONFIG_ATTRIBUTE, HeadTimeoutHttpToolsProtocol
from service.logs import log_config
from service.settings import Settings

WORKER_CLASS = "deploy.gunicorn.ServiceUvicornWorker"
# The worker cuts requests still running at APP_GRACEFUL_TIMEOUT and exits by
# itself; gunicorn's SIGKILL is only a backstop this much later.
KILL_BACKSTOP_SECONDS = 2


def native_config(settings: Settings) -> dict[str, Any]:
    return {"gunicorn": gunicorn_options(settings), "uvicorn_worker": uvicorn_overrides(settings)}


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "bind": [bind_address(settings.host, settings.port)],
        "workers": settings.workers,
        "worker_class": WORKER_CLASS,
        "loglevel": settings.log_level,
        "logconfig_dict": log_config(settings),
        "accesslog": None,  # the app writes access lines (service/middleware/access_log.py)
        "errorlog": "-",
        "keepalive": settings.keepalive_timeout,
        "graceful_timeout": settings.graceful_timeout + KILL_BACKSTOP_SECONDS,
        "max_requests": settings.max_requests,
        "max_requests_jitter": settings.max_requests_jitter,
        "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips),
        "worker_tmp_dir": str(SHM_DIR) if SHM_DIR.is_dir() else None,
        "proc_name": "asgi-deploy",
        "preload_app": False,
        "reuse_port": False,
        "control_socket_disable": True,  # it would write under $HOME: read-only in the image
        "child_exit": child_exit,
    }


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live metric gauges, so in-progress counts stay true after a crash."""
    from service.metrics import worker_exited  # noqa: PLC0415 - only once the metrics dir is exported

    worker_exited(worker.pid, server.app.metrics_dir)


def uvicorn_overrides(settings: Settings) -> dict[str, Any]:
    """What each Uvicorn worker runs with, beyond what uvicorn-worker maps from gunicorn."""
    return {
        "loop": "uvloop",
        "http": HeadTimeoutHttpToolsProtocol,  # httptools, plus a request-head deadline
        "lifespan": "on",
        "proxy_headers": False,  # applied by the app, see service/app.py
        "server_header": False,
        "timeout_graceful_shutdown": settings.graceful_timeout,
        CONFIG_ATTRIBUTE: settings.request_head_timeout,
    }


class ServiceUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """Uvicorn worker with our explicit fast path and graceful timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, value in self.app.worker_overrides.items():
            setattr(self.config, key, value)


class ServiceArbiter(Arbiter):  # type: ignore[misc]
    """SIGINT drains like SIGTERM (gunicorn's own SIGINT is a quick, request-dropping stop)."""

    def handle_int(self) -> None:
        self.handle_term()


class GunicornApplication(BaseApplication):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        options: dict[str, Any] | None = None,
        worker_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.options = gunicorn_options(settings) if options is None else options
        self.worker_overrides = uvicorn_overrides(settings) if worker_overrides is None else worker_overrides
        self.app_import = settings.asgi_app
        self.metrics_dir = settings.metrics_dir
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return import_from_string(self.app_import)

    def run(self) -> None:
        ServiceArbiter(self).run()


def run(settings: Settings) -> int:
    GunicornApplication(settings).run()
    return 0
