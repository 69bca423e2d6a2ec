"""The app factory: everything the app needs arrives as arguments, nothing is read at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from service.access_log import ACCESS_LOGGER, AccessLog
from service.api import echo, event_stream, health, metrics, root, websocket_echo
from service.api import rooms as rooms_api
from service.api.health import ReadinessCheck
from service.brokers import broker_for
from service.drain_flag import DrainState, watch
from service.errors import install_error_handlers
from service.forwarded import TrustedProxies
from service.log_writer import flush_all as flush_log_lines
from service.middleware.counted_marker import CountedMarker
from service.middleware.edge import EdgeMiddleware
from service.middleware.head import HeadAsGetMiddleware
from service.middleware.hosts import HostAllowListMiddleware
from service.middleware.limits import LimitsMiddleware
from service.multiprocess_metrics import flush as flush_metrics
from service.multiprocess_metrics import (
    publish_certificate_expiry,
    sample_process_periodically,
    worker_exited,
)
from service.session_metrics import declare_open_sessions
from service.sessions import RealtimeState
from service.settings import Settings
from service.tracing import tracing_for


class ServiceApp(FastAPI):
    """FastAPI with our middleware *outside* Starlette's error middleware.

    `add_middleware` would place them inside it, so a 500 would leave without a
    request id or security headers.
    """

    service_settings: Settings

    def build_middleware_stack(self) -> ASGIApp:
        settings = self.service_settings
        app: ASGIApp = LimitsMiddleware(
            HeadAsGetMiddleware(super().build_middleware_stack()),
            max_body_size=settings.max_body_size,
            max_concurrency=settings.max_concurrency,
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
        )
        # The outer layer records the request metrics, a 503 of the limits included. What the
        # Host allow-list and CORS answer themselves is not counted: behind them, a marker
        # tells the outer layer which requests reached the app.
        between = bool(settings.cors_allow_origins) or settings.allowed_hosts != ("*",)
        if settings.metrics_enabled and between:
            app = CountedMarker(app)
        if settings.cors_allow_origins:
            app = CORSMiddleware(
                app,
                allow_origins=list(settings.cors_allow_origins),
                allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
                allow_headers=["content-type", "x-request-id"],
                expose_headers=["x-request-id"],
                max_age=600,
            )
        if settings.allowed_hosts != ("*",):
            app = HostAllowListMiddleware(app, list(settings.allowed_hosts))
        access_log = (
            AccessLog(logging.getLogger(ACCESS_LOGGER), frozenset(settings.access_log_skip_paths))
            if settings.access_log
            else None
        )
        # Forwarded client and scheme, request id, access line, drain's Connection: close,
        # security headers and the metrics: one layer, service/middleware/edge.py.
        # X-Forwarded-For/-Proto are honoured in the app, not by each server, because
        # hypercorn and granian have no trusted-proxy list: one implementation gives
        # one behaviour on every profile.
        return EdgeMiddleware(
            app,
            self.state.drain,
            access_log,
            trusted_proxies=TrustedProxies(settings.forwarded_allow_ips),
            metrics=settings.metrics_enabled,
            count_marked_only=between,
        )


# Tracing is off unless APP_OTLP_ENDPOINT is set (service/tracing.py), and then FastAPI's
# native telemetry is told so: left at its defaults it looks, on every request, for
# globally configured OpenTelemetry providers (about 4 µs of a ~40 µs `GET /`).
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


# A lifespan of yours: Starlette's own shape, an async context manager built from the app.
# Open your resources before its `yield` (put them on `app.state`), close them after it.
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings,
    readiness_checks: Sequence[ReadinessCheck] = (),
    *,
    lifespan: Lifespan | None = None,
    routers: Sequence[APIRouter] = (),
    demo_routes: bool = True,
) -> FastAPI:
    """The service: its probes, `GET /` and `/metrics`, plus what you pass.

    `lifespan` runs inside the service's own: it opens before the worker reports ready
    (`/readyz` is 503 until it has), and closes once the server has stopped serving, after
    in-flight requests and long-lived connections have ended (or the server's graceful
    timeout has cut them), before the worker exits. `routers` are included after the
    service's probes and `/metrics`, ahead of `GET /` and the demo. `demo_routes=False` leaves
    out the demo: `/echo`, `/ws`, `/events` and `/rooms/...` (docs/building.md).
    """
    tracing = tracing_for(settings)

    @asynccontextmanager
    async def service_lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.realtime.attach(asyncio.get_running_loop())
        sampler = asyncio.create_task(sample_process_periodically()) if settings.metrics_enabled else None
        if settings.metrics_enabled:
            declare_open_sessions(route for router in (*demo_routers, *routers) for route in router.routes)
        if settings.metrics_enabled and settings.tls_cert_file is not None:
            publish_certificate_expiry(settings.tls_cert_file)
        if demo_routes:
            await app.state.rooms.start()  # rooms: does not wait for the broker (service/brokers.py)
        yours = lifespan(app) if lifespan is not None else contextlib.nullcontext()
        async with watch(settings.drain_file, app.state.drain), yours:
            app.state.lifecycle = "running"
            yield
            app.state.lifecycle = "stopping"
        if sampler is not None:
            sampler.cancel()
        app.state.realtime.detach()
        if demo_routes:
            await app.state.rooms.stop()  # rooms
        if settings.metrics_enabled:
            flush_metrics()  # the requests of the last loop iteration
            worker_exited(os.getpid(), settings.metrics_dir)
        if tracing is not None:
            tracing.shutdown()  # flushes the spans still batched
        flush_log_lines()  # the access lines of the last loop iteration

    docs = settings.effective_docs_enabled
    app = ServiceApp(
        telemetry=tracing.telemetry_config() if tracing is not None else TELEMETRY_OFF,
        title="asgi-deploy service",
        lifespan=service_lifespan,
        root_path=settings.root_path,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.service_settings = settings
    app.state.drain = DrainState()
    app.state.realtime = RealtimeState(
        app.state.drain,
        settings.ws_max_message_bytes,
        settings.ws_max_connections,
        settings.ws_allowed_origins,
    )
    app.state.demo_routes = demo_routes  # the test suite follows it (tests/conftest.py)
    if demo_routes:
        app.state.rooms = broker_for(settings)  # rooms
    app.state.lifecycle = "starting"
    app.state.readiness_checks = list(readiness_checks)

    # The order routes are matched in: a request tries each route before the one that answers it
    # (in a tight loop a router costs FastAPI about 2 µs to pass, a route 0.7). First what nothing
    # may shadow (the probes, /metrics), then yours, then `GET /` and the demo: a request to your
    # routes passes three routes, and a route of yours may answer a path the demo has.
    health.add_probes(app)
    if settings.metrics_enabled:
        metrics.add_metrics_route(app)
    for router in routers:
        app.include_router(router)
    app.include_router(root.router)
    demo_routers = (
        [echo.router, websocket_echo.router, event_stream.router, rooms_api.router] if demo_routes else []
    )
    for router in demo_routers:
        app.include_router(router)
    install_error_handlers(app)
    return app
