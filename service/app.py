"""The app factory: everything the app needs arrives as arguments, nothing is read at import."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from service.access_log import ACCESS_LOGGER, AccessLog
from service.api import echo, health, metrics, realtime, root
from service.api import rooms as rooms_api
from service.api.health import ReadinessCheck
from service.brokers import broker_for
from service.drain import DrainState, watch
from service.errors import install_error_handlers
from service.forwarded import TrustedProxies
from service.lean_routes import make_lean
from service.log_writer import flush_all as flush_log_lines
from service.metrics import flush as flush_metrics
from service.metrics import sample_process_periodically, worker_exited
from service.middleware.edge import EdgeMiddleware
from service.middleware.hosts import HostAllowListMiddleware
from service.middleware.limits import LimitsMiddleware
from service.middleware.metrics import CountedMarker
from service.realtime import RealtimeState
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
        # Here, on the first request or at start-up, so that routes added after
        # create_app() get it too.
        if settings.otlp_endpoint is None:
            make_lean(self.router.routes)
        app: ASGIApp = LimitsMiddleware(
            super().build_middleware_stack(),
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

# Every option of a route, as `APIRouter.add_api_route` takes it and `APIRoute` keeps it.
_ROUTE_OPTIONS = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in {"self", "path", "endpoint", "route_class_override"}
)


def include_flat(app: FastAPI, router: APIRouter) -> None:
    """`app.include_router(router)`, with each route declared on the app itself.

    FastAPI 0.16x keeps an included router as one route that resolves its own
    routes again on every request: about 7 µs per `GET /` here, a fifth of it. A
    route declared on the app is matched directly and, as with include_router,
    built with the app's dependency overrides, defaults, tags and dependencies.
    Anything but plain API routes (mounts, websockets, nested routers) is left
    to include_router.
    """
    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    if len(routes) != len(router.routes):
        app.include_router(router)
        return
    for route in routes:
        options = {name: getattr(route, name) for name in _ROUTE_OPTIONS}
        app.router.add_api_route(route.path, route.endpoint, route_class_override=type(route), **options)


def create_app(settings: Settings, readiness_checks: Sequence[ReadinessCheck] = ()) -> FastAPI:
    tracing = tracing_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.lifecycle = "running"
        app.state.realtime.attach(asyncio.get_running_loop())
        sampler = asyncio.create_task(sample_process_periodically()) if settings.metrics_enabled else None
        await app.state.rooms.start()  # rooms: does not wait for the broker (service/brokers.py)
        async with watch(settings.drain_file, app.state.drain):
            yield
        if sampler is not None:
            sampler.cancel()
        app.state.realtime.detach()
        await app.state.rooms.stop()  # rooms
        app.state.lifecycle = "stopping"
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
        lifespan=lifespan,
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
    app.state.rooms = broker_for(settings)  # rooms
    app.state.lifecycle = "starting"
    app.state.readiness_checks = list(readiness_checks)

    include_flat(app, root.router)
    include_flat(app, health.router)
    include_flat(app, echo.router)
    include_flat(app, realtime.router)
    # On the app itself, like include_flat's routes: an included router is resolved again per request.
    app.add_api_websocket_route(realtime.WS_PATH, realtime.websocket_echo)
    include_flat(app, rooms_api.router)  # rooms
    app.add_api_websocket_route(rooms_api.WS_PATH, rooms_api.room_websocket)  # rooms
    if settings.metrics_enabled:
        include_flat(app, metrics.router)
    install_error_handlers(app)
    return app
