"""The app factory: everything the app needs arrives as arguments, nothing is read at import."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from service.api import echo, health, root
from service.api.health import ReadinessCheck
from service.errors import install_error_handlers
from service.settings import Settings


def create_app(settings: Settings, readiness_checks: Sequence[ReadinessCheck] = ()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.lifecycle = "running"
        yield
        app.state.lifecycle = "stopping"

    docs = settings.docs_on
    app = FastAPI(
        title="asgi-deploy service",
        lifespan=lifespan,
        root_path=settings.root_path,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.lifecycle = "starting"
    app.state.readiness_checks = list(readiness_checks)

    app.include_router(root.router)
    app.include_router(health.router)
    app.include_router(echo.router)
    install_error_handlers(app)

    # X-Forwarded-For/-Proto are honoured in the app, not by each server, because
    # hypercorn has no equivalent of uvicorn's trusted-proxy list: one
    # implementation gives one behaviour on every server profile.
    app.add_middleware(
        ProxyHeadersMiddleware,
        trusted_hosts=list(settings.forwarded_allow_ips),
    )
    return app
