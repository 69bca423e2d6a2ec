"""The app factory: everything the app needs arrives as arguments, nothing is read at import."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from service.api import echo, health, metrics, root
from service.api.health import ReadinessCheck
from service.drain import DrainMiddleware, DrainState, watch
from service.errors import install_error_handlers
from service.metrics import sample_process_periodically, worker_exited
from service.middleware.access_log import ACCESS_LOGGER, AccessLogMiddleware
from service.middleware.hosts import HostAllowListMiddleware
from service.middleware.limits import LimitsMiddleware
from service.middleware.metrics import MetricsMiddleware
from service.middleware.request_id import RequestIdMiddleware
from service.middleware.security_headers import SecurityHeadersMiddleware
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
            super().build_middleware_stack(),
            max_body_size=settings.max_body_size,
            max_concurrency=settings.max_concurrency,
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
        )
        if settings.metrics_enabled:
            app = MetricsMiddleware(app)
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
        app = SecurityHeadersMiddleware(app)
        app = DrainMiddleware(app, self.state.drain)
        if settings.access_log:
            app = AccessLogMiddleware(
                app, logging.getLogger(ACCESS_LOGGER), frozenset(settings.access_log_skip_paths)
            )
        # X-Forwarded-For/-Proto are honoured in the app, not by each server, because
        # hypercorn and granian have no trusted-proxy list: one implementation gives
        # one behaviour on every profile. It runs first, so the access log and HSTS
        # see the real client and scheme.
        # (uvicorn types ASGI apps with its own protocol classes, hence the Any.)
        inner: Any = RequestIdMiddleware(app)
        return ProxyHeadersMiddleware(  # type: ignore[return-value]
            inner, trusted_hosts=list(settings.forwarded_allow_ips)
        )


def create_app(settings: Settings, readiness_checks: Sequence[ReadinessCheck] = ()) -> FastAPI:
    tracing = tracing_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.lifecycle = "running"
        sampler = asyncio.create_task(sample_process_periodically()) if settings.metrics_enabled else None
        async with watch(settings.drain_file, app.state.drain):
            yield
        if sampler is not None:
            sampler.cancel()
        app.state.lifecycle = "stopping"
        if settings.metrics_enabled:
            worker_exited(os.getpid(), settings.metrics_dir)
        if tracing is not None:
            tracing.shutdown()  # flushes the spans still batched

    docs = settings.docs_on
    app = ServiceApp(
        telemetry=tracing.telemetry_config() if tracing is not None else None,
        title="asgi-deploy service",
        lifespan=lifespan,
        root_path=settings.root_path,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.service_settings = settings
    app.state.drain = DrainState()
    app.state.lifecycle = "starting"
    app.state.readiness_checks = list(readiness_checks)

    app.include_router(root.router)
    app.include_router(health.router)
    app.include_router(echo.router)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    install_error_handlers(app)
    return app
