"""Gunicorn profile: gunicorn supervises, Uvicorn workers (the maintained `uvicorn-worker`) serve.

What both gunicorn profiles share (options, arbiter, application) is deploy/gunicorn_app.py;
here is the worker: uvicorn's, with our fast path and graceful timeout through uvicorn-worker's
public hook (`CONFIG_KWARGS`), and the head deadline deploy/uvicorn_internals.py carries.
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker

from deploy.gunicorn_app import (
    GunicornApplication,
    application_from,
    gunicorn_native_config,
    gunicorn_options,
    gunicorn_profile,
)
from deploy.profile import Native
from deploy.tls_options import MINIMUM_VERSION_HOW, context_hook
from deploy.uvicorn import UVICORN_HTTP, websocket_options
from deploy.uvicorn_internals import (
    CONFIG_ATTRIBUTE,
    GUNICORN_PATCHES,
    give_worker_head_deadline,
    http_protocol,
)
from deploy.worker_timing import KILL_BACKSTOP_SECONDS
from service.logs import ServerLoggers
from service.settings import Settings

WORKER_CLASS = "deploy.gunicorn.ServiceUvicornWorker"
# The worker cuts requests still running at APP_GRACEFUL_TIMEOUT and exits by
# itself; gunicorn's SIGKILL is only a backstop this much later.
WORKER_KEY = "uvicorn_worker"  # the worker's part of the native config

# Where the arbiter and its uvicorn workers log (service/logs.py configures them, access silenced).
LOGGERS = ServerLoggers(messages=("gunicorn.error", "uvicorn"), access=("gunicorn.access", "uvicorn.access"))


def native_config(settings: Settings) -> dict[str, Any]:
    return gunicorn_native_config(settings, options(settings), WORKER_KEY, worker_overrides(settings))


def options(settings: Settings) -> dict[str, Any]:
    return {
        **gunicorn_options(settings, WORKER_CLASS, LOGGERS),
        "graceful_timeout": settings.graceful_timeout + KILL_BACKSTOP_SECONDS,
    }


def worker_overrides(settings: Settings) -> dict[str, Any]:
    """What each Uvicorn worker runs with, beyond what uvicorn-worker maps from gunicorn."""
    return {
        "loop": "uvloop",
        "http": http_protocol(),  # httptools, plus a request-head deadline where tested
        "lifespan": "on",
        **websocket_options(settings),
        "proxy_headers": False,  # applied by the app, see service/app.py
        "server_header": False,
        "timeout_graceful_shutdown": settings.graceful_timeout,
        # uvicorn-worker hands gunicorn's certificate options to uvicorn, which builds the context.
        "ssl_context_factory": context_hook(settings),  # APP_TLS_MIN_VERSION
        CONFIG_ATTRIBUTE: settings.request_head_timeout,
    }


class ServiceUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """Uvicorn worker with our explicit fast path, graceful timeout and head deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        give_worker_head_deadline(self.config, self.app.worker_overrides[CONFIG_ATTRIBUTE])

    @property
    def CONFIG_KWARGS(self) -> dict[str, Any]:  # noqa: N802 - uvicorn-worker's name for it
        """uvicorn-worker's hook for a subclass's Config options, read once gunicorn set `self.app`."""
        overrides = dict(self.app.worker_overrides)
        overrides.pop(CONFIG_ATTRIBUTE)  # no option of uvicorn's: handed over by __init__
        return {**UvicornWorker.CONFIG_KWARGS, **overrides}


def application(settings: Settings) -> GunicornApplication:
    return application_from(native_config(settings), WORKER_KEY, settings)


PROFILE = gunicorn_profile(
    name="gunicorn",
    loggers=LOGGERS,
    summary="gunicorn's arbiter with Uvicorn workers (uvicorn-worker) on uvloop + httptools",
    build=native_config,
    application=application,
    worker_settings={
        "ws_max_message_bytes": Native("uvicorn_worker.ws_max_size", "beyond it: close 1009"),
        "ws_ping_interval": Native("uvicorn_worker.ws_ping_interval"),
        "ws_ping_timeout": Native("uvicorn_worker.ws_ping_timeout"),
        "request_head_timeout": Native(
            f"uvicorn_worker.{CONFIG_ATTRIBUTE}", "read by deploy/uvicorn_internals.py's protocol"
        ),
        "graceful_timeout": Native(
            "uvicorn_worker.timeout_graceful_shutdown",
            f"the arbiter's own graceful_timeout is {KILL_BACKSTOP_SECONDS} s longer, a SIGKILL backstop",
        ),
        "tls_min_version": Native(
            "uvicorn_worker.ssl_context_factory",
            f"uvicorn's hook, as the worker builds the context: {MINIMUM_VERSION_HOW}",
        ),
    },
    http=UVICORN_HTTP,
    carried=GUNICORN_PATCHES,
)
