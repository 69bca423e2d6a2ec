"""Gunicorn with its own built-in ASGI worker (`-k asgi`, gunicorn >= 24): no uvicorn in the request path.

Everything but the worker is what both gunicorn profiles share (deploy/gunicorn_app.py).
The worker is gunicorn's, subclassed (deploy/gunicorn_asgi_worker.py) for the one thing it
lacks: a request-head deadline, so silent or trickling connections are closed
after APP_REQUEST_HEAD_TIMEOUT seconds as on the other profiles.
"""

from __future__ import annotations

from typing import Any

from deploy.common import refuse_ws_ping
from deploy.gunicorn_app import GunicornApplication, gunicorn_options
from deploy.gunicorn_asgi_worker import WORKER_SETTING
from service.settings import Settings

WORKER_CLASS = "deploy.gunicorn_asgi_worker.HeadTimeoutASGIWorker"


def native_config(settings: Settings) -> dict[str, Any]:
    refuse_ws_ping("gunicorn-asgi", settings, interval=True, timeout=True)
    return {
        # gunicorn's `asgi` worker, plus a request-head deadline
        **gunicorn_options(settings, WORKER_CLASS),
        "asgi_loop": "uvloop",
        "asgi_lifespan": "on",
        "root_path": "",  # applied by the app, see service/app.py
        # Proxy headers are applied by the app; gunicorn must not trust any itself.
        "secure_scheme_headers": {},
        "websocket_max_message_size": settings.ws_max_message_bytes,  # beyond it: close 1009
    }


def worker_overrides(settings: Settings) -> dict[str, Any]:
    """What each worker runs with beyond gunicorn's own settings (read by HeadTimeoutASGIWorker)."""
    return {WORKER_SETTING: settings.request_head_timeout}


def application(settings: Settings) -> GunicornApplication:
    return GunicornApplication(
        settings, options=native_config(settings), worker_overrides=worker_overrides(settings)
    )


def run(settings: Settings) -> int:
    application(settings).run()
    return 0
