"""Gunicorn profile: gunicorn supervises, Uvicorn workers (the maintained `uvicorn-worker`) serve.

What both gunicorn profiles share (options, arbiter, application) is deploy/gunicorn_app.py;
here is the worker: uvicorn's, with our fast path, graceful timeout and head deadline.
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker

from deploy.gunicorn_app import GunicornApplication, gunicorn_options
from deploy.profile import INERT_PROXY_LIST, Native, Profile
from deploy.uvicorn_protocol import CONFIG_ATTRIBUTE, HeadTimeoutHttpToolsProtocol
from service.settings import Settings
from service.versions import require

require("uvicorn-worker", ">=0.4,<0.5", "deploy/gunicorn.py (UvicornWorker.config)")

WORKER_CLASS = "deploy.gunicorn.ServiceUvicornWorker"
# The worker cuts requests still running at APP_GRACEFUL_TIMEOUT and exits by
# itself; gunicorn's SIGKILL is only a backstop this much later.
KILL_BACKSTOP_SECONDS = 2


def native_config(settings: Settings) -> dict[str, Any]:
    return {
        "app": settings.asgi_app,  # resolved by GunicornApplication.load in each worker
        "gunicorn": options(settings),
        "uvicorn_worker": worker_overrides(settings),
        "arbiter": {"max_worker_memory": settings.max_worker_memory},  # MiB, read by ServiceArbiter
    }


def options(settings: Settings) -> dict[str, Any]:
    return {
        **gunicorn_options(settings, WORKER_CLASS),
        "graceful_timeout": settings.graceful_timeout + KILL_BACKSTOP_SECONDS,
    }


def worker_overrides(settings: Settings) -> dict[str, Any]:
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


def application(settings: Settings) -> GunicornApplication:
    native = native_config(settings)
    return GunicornApplication(
        native["app"],
        options=native["gunicorn"],
        worker_overrides=native["uvicorn_worker"],
        metrics_dir=settings.metrics_dir,
        max_worker_memory=native["arbiter"]["max_worker_memory"],
    )


def run(settings: Settings) -> int:
    application(settings).run()
    return 0


PROFILE = Profile(
    name="gunicorn",
    summary="gunicorn's arbiter with Uvicorn workers (uvicorn-worker) on uvloop + httptools",
    settings={
        "asgi_app": Native("app", "resolved by GunicornApplication.load in each worker"),
        "host": Native("gunicorn.bind", "`host:port`, IPv6 bracketed"),
        "port": Native("gunicorn.bind"),
        "workers": Native("gunicorn.workers"),
        "log_level": Native("gunicorn.loglevel"),
        "log_format": Native("gunicorn.logconfig_dict", "service/logs.py's one dictConfig"),
        "keepalive_timeout": Native("gunicorn.keepalive"),
        "request_head_timeout": Native(
            f"uvicorn_worker.{CONFIG_ATTRIBUTE}", "read by deploy/uvicorn_protocol.py"
        ),
        "graceful_timeout": Native(
            "uvicorn_worker.timeout_graceful_shutdown",
            f"the arbiter's own graceful_timeout is {KILL_BACKSTOP_SECONDS} s longer, a SIGKILL backstop",
        ),
        "max_requests": Native("gunicorn.max_requests"),
        "max_requests_jitter": Native("gunicorn.max_requests_jitter"),
        "forwarded_allow_ips": Native("gunicorn.forwarded_allow_ips", INERT_PROXY_LIST),
        "worker_timeout": Native("gunicorn.timeout", "gunicorn's heartbeat: SIGABRT, then SIGKILL"),
        "max_worker_memory": Native(
            "arbiter.max_worker_memory", "checked each turn of the arbiter's loop; SIGTERM recycles"
        ),
    },
    build=native_config,
    serve=run,
)
