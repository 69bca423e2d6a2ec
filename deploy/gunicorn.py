"""Gunicorn profile: gunicorn supervises, Uvicorn workers (the maintained `uvicorn-worker`) serve.

What both gunicorn profiles share (options, arbiter, application) is deploy/gunicorn_app.py;
here is the worker: uvicorn's, with our fast path and graceful timeout through uvicorn-worker's
public hook (`CONFIG_KWARGS`), and the head deadline deploy/uvicorn_internals.py carries.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from uvicorn_worker import UvicornWorker

from deploy.gunicorn_app import GunicornApplication, application_from, gunicorn_profile
from deploy.tls_options import MINIMUM_VERSION_HOW
from deploy.uvicorn import (
    GRACEFUL_AT,
    HEAD_DEADLINE_AT,
    MIN_VERSION_AT,
    UVICORN_HTTP,
    WEBSOCKET_SETTINGS,
    protocol_options,
)
from deploy.uvicorn_internals import (
    GUNICORN_PATCHES,
    WORKER_ACCEPT_SETTLE,
    give_worker_head_deadline,
    serve_settling,
)
from deploy.worker_timing import KILL_BACKSTOP_SECONDS
from service.logs import ServerLoggers
from service.settings import Settings

WORKER_CLASS = "deploy.gunicorn.ServiceUvicornWorker"
WORKER_KEY = "uvicorn_worker"  # the worker's part of the server's config

# Where the arbiter and its uvicorn workers log (service/logs.py configures them, access silenced).
LOGGERS = ServerLoggers(messages=("gunicorn.error", "uvicorn"), access=("gunicorn.access", "uvicorn.access"))


def options(settings: Settings) -> dict[str, Any]:
    # The worker cuts requests still running at APP_GRACEFUL_TIMEOUT and exits by
    # itself; gunicorn's SIGKILL is only a backstop this much later.
    return {"graceful_timeout": settings.graceful_timeout + KILL_BACKSTOP_SECONDS}


class ServiceUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """Uvicorn worker with our explicit fast path, graceful timeout and head deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # No option of uvicorn's: the project's, put on the Config the worker built.
        give_worker_head_deadline(self.config, self.app.project.request_head_timeout)

    async def _serve(self) -> None:
        # uvicorn-worker's own, but for a server that answers what a stopping worker has just
        # accepted (deploy/uvicorn_internals.py WORKER_ACCEPT_SETTLE), where tested.
        if WORKER_ACCEPT_SETTLE.applies():
            await serve_settling(self)
        else:
            await super()._serve()

    @property
    def CONFIG_KWARGS(self) -> dict[str, Any]:  # noqa: N802 - uvicorn-worker's name for it
        """uvicorn-worker's hook for a subclass's Config options, read once gunicorn set `self.app`."""
        return {**UvicornWorker.CONFIG_KWARGS, **self.app.worker_overrides}


def application(settings: Settings) -> GunicornApplication:
    return application_from(PROFILE.launch_config(settings), WORKER_KEY)


PROFILE = gunicorn_profile(
    name="gunicorn",
    loggers=LOGGERS,
    summary="gunicorn's arbiter with Uvicorn workers (uvicorn-worker) on uvloop + httptools",
    worker_key=WORKER_KEY,
    worker_class=lambda: WORKER_CLASS,
    worker_settings={
        **{name: native.within(WORKER_KEY) for name, native in WEBSOCKET_SETTINGS.items()},
        "request_head_timeout": replace(
            HEAD_DEADLINE_AT,
            how="set on each worker's uvicorn Config, read by deploy/uvicorn_internals.py's protocol",
        ),
        "graceful_timeout": GRACEFUL_AT.within(
            WORKER_KEY,
            f"the arbiter's own graceful_timeout is {KILL_BACKSTOP_SECONDS} s longer, a SIGKILL backstop",
        ),
        "tls_min_version": MIN_VERSION_AT.within(
            WORKER_KEY, f"uvicorn's hook, as the worker builds the context: {MINIMUM_VERSION_HOW}"
        ),
    },
    options=options,
    # Beyond what uvicorn-worker maps from gunicorn's options (its certificate options included:
    # uvicorn builds the context with them).
    worker=protocol_options,
    http=UVICORN_HTTP,
    carried=GUNICORN_PATCHES,
)
