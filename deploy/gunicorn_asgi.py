"""Gunicorn with its own built-in ASGI worker (`-k asgi`, gunicorn >= 24): no uvicorn in the request path.

Everything but the worker is what both gunicorn profiles share (deploy/gunicorn_app.py).
The worker is gunicorn's, subclassed (deploy/gunicorn_asgi_worker.py) for the one thing it
lacks: a request-head deadline, so silent or trickling connections are closed
after APP_REQUEST_HEAD_TIMEOUT seconds as on the other profiles.
"""

from __future__ import annotations

from typing import Any

from deploy.gunicorn_app import GunicornApplication, gunicorn_options
from deploy.gunicorn_asgi_worker import WORKER_SETTING
from deploy.profile import INERT_PROXY_LIST, Native, Profile
from service.settings import Settings

WORKER_CLASS = "deploy.gunicorn_asgi_worker.HeadTimeoutASGIWorker"


def native_config(settings: Settings) -> dict[str, Any]:
    return {
        "app": settings.asgi_app,  # resolved by GunicornApplication.load in each worker
        "gunicorn": options(settings),
        "asgi_worker": worker_overrides(settings),
        "arbiter": {"max_worker_memory": settings.max_worker_memory},  # MiB, read by ServiceArbiter
    }


def options(settings: Settings) -> dict[str, Any]:
    return {
        # gunicorn's `asgi` worker, plus a request-head deadline
        **gunicorn_options(settings, WORKER_CLASS),
        "asgi_loop": "uvloop",
        "asgi_lifespan": "on",
        "root_path": "",  # applied by the app, see service/app.py
        # Proxy headers are applied by the app; gunicorn must not trust any itself.
        "secure_scheme_headers": {},
    }


def worker_overrides(settings: Settings) -> dict[str, Any]:
    """What each worker runs with beyond gunicorn's own settings (read by HeadTimeoutASGIWorker)."""
    return {WORKER_SETTING: settings.request_head_timeout}


def application(settings: Settings) -> GunicornApplication:
    native = native_config(settings)
    return GunicornApplication(
        native["app"],
        options=native["gunicorn"],
        worker_overrides=native["asgi_worker"],
        metrics_dir=settings.metrics_dir,
        max_worker_memory=native["arbiter"]["max_worker_memory"],
    )


def run(settings: Settings) -> int:
    application(settings).run()
    return 0


PROFILE = Profile(
    name="gunicorn-asgi",
    summary="gunicorn's arbiter with its own ASGI worker (`-k asgi`) on uvloop: no uvicorn at all",
    settings={
        "asgi_app": Native("app", "resolved by GunicornApplication.load in each worker"),
        "host": Native("gunicorn.bind", "`host:port`, IPv6 bracketed"),
        "port": Native("gunicorn.bind"),
        "workers": Native("gunicorn.workers"),
        "log_level": Native("gunicorn.loglevel"),
        "log_format": Native("gunicorn.logconfig_dict", "service/logs.py's one dictConfig"),
        "keepalive_timeout": Native("gunicorn.keepalive"),
        "request_head_timeout": Native(
            f"asgi_worker.{WORKER_SETTING}", "read by deploy/gunicorn_asgi_worker.py's protocol"
        ),
        "graceful_timeout": Native("gunicorn.graceful_timeout", "the ASGI worker drains this long itself"),
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
