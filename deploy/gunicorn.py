"""Gunicorn profile: gunicorn supervises, Uvicorn workers (the maintained `uvicorn-worker`) serve.

What both gunicorn profiles share (options, arbiter, application) is deploy/gunicorn_app.py;
here is the worker: uvicorn's, with our fast path, graceful timeout and head deadline.
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker

from deploy.gunicorn_app import GunicornApplication, gunicorn_options
from deploy.uvicorn import websocket_options
from deploy.uvicorn_protocol import CONFIG_ATTRIBUTE, HeadTimeoutHttpToolsProtocol
from service.settings import Settings

WORKER_CLASS = "deploy.gunicorn.ServiceUvicornWorker"
# The worker cuts requests still running at APP_GRACEFUL_TIMEOUT and exits by
# itself; gunicorn's SIGKILL is only a backstop this much later.
KILL_BACKSTOP_SECONDS = 2


def native_config(settings: Settings) -> dict[str, Any]:
    return {"gunicorn": options(settings), "uvicorn_worker": worker_overrides(settings)}


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
        **websocket_options(settings),
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
    return GunicornApplication(
        settings, options=options(settings), worker_overrides=worker_overrides(settings)
    )


def run(settings: Settings) -> int:
    application(settings).run()
    return 0
