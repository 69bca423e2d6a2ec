"""Gunicorn with its own built-in ASGI worker (`-k asgi`, gunicorn >= 24): no uvicorn in the request path.

Everything but the worker is the gunicorn profile's configuration. Its worker
(gunicorn 27) has no request-head timeout: an explicit APP_REQUEST_HEAD_TIMEOUT
is refused, and silent or trickling connections stay open until they go away.
"""

from __future__ import annotations

from typing import Any

from deploy.common import refuse_if_set
from deploy.gunicorn import GunicornApplication, gunicorn_options
from service.settings import Settings


def native_config(settings: Settings) -> dict[str, Any]:
    refuse_if_set(
        "gunicorn-asgi",
        settings,
        "request_head_timeout",
        "gunicorn's ASGI worker has no request-head timeout (silent connections stay open); "
        "unset it or pick another profile",
    )
    return {
        **gunicorn_options(settings),
        "worker_class": "asgi",
        "asgi_loop": "uvloop",
        "asgi_lifespan": "on",
        "root_path": "",  # applied by the app, see service/app.py
        # Proxy headers are applied by the app; gunicorn must not trust any itself.
        "secure_scheme_headers": {},
        # gunicorn's ASGI worker drains for graceful_timeout itself: no separate backstop.
        "graceful_timeout": settings.graceful_timeout,
    }


def run(settings: Settings) -> int:
    GunicornApplication(settings, options=native_config(settings), worker_overrides={}).run()
    return 0
