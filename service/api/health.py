"""Liveness and readiness probes.

`/healthz` answers as long as the event loop runs: it has no dependencies, so a
failing database never makes Kubernetes restart a healthy process.
`/readyz` answers 200 only once start-up (the lifespan) has finished and every
readiness check passes; before that, and while shutting down, it answers 503 so
the pod is taken out of the Service's endpoints.

Adding a dependency check: write an `async def check() -> None` that raises when
the dependency is unusable, and pass it in `create_app(..., readiness_checks=[check])`
(see `service/main.py`). Each check runs with a timeout on every probe; keep it cheap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.api.fixed_path import FixedPathRoute

ReadinessCheck = Callable[[], Awaitable[None]]
# Exempt from the concurrency limit and the Host allow-list (service/middleware/).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
CHECK_TIMEOUT_SECONDS = 2.0


def add_probes(app: FastAPI) -> None:
    """The probes as routes of the app's own, ahead of every router.

    Not a router of their own: FastAPI matches an included router as one more layer (about
    2 µs in a tight loop, of every request whose route comes after it, FastAPI 0.165), and nearly every route
    comes after the probes, which go first so that no route of yours can shadow them.
    """
    app.router.add_api_route(
        "/healthz",
        liveness,
        methods=["GET"],
        response_model=Health,
        tags=["health"],
        route_class_override=FixedPathRoute,  # every request passes the probes
    )
    app.router.add_api_route(
        "/readyz",
        readiness,
        methods=["GET"],
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready: starting, stopping or failing"}},
        tags=["health"],
        route_class_override=FixedPathRoute,
    )


class Health(BaseModel):
    status: Literal["ok", "starting", "stopping", "failing"]
    failing: list[str] = []


async def liveness() -> Health:
    return Health(status="ok")


async def readiness(request: Request) -> Health | JSONResponse:
    state = request.app.state
    if state.lifecycle != "running" or state.drain.draining:
        status = "starting" if state.lifecycle == "starting" else "stopping"
        return _unavailable(Health(status=status))
    failing = await _failing_checks(state.readiness_checks)
    if failing:
        return _unavailable(Health(status="failing", failing=failing))
    return Health(status="ok")


def _unavailable(health: Health) -> JSONResponse:
    return JSONResponse(health.model_dump(), status_code=503)


async def _failing_checks(checks: Sequence[ReadinessCheck]) -> list[str]:
    async def run(check: ReadinessCheck) -> str | None:
        try:
            await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
        except Exception:
            return getattr(check, "__name__", repr(check))
        return None

    results = await asyncio.gather(*(run(check) for check in checks))
    return [name for name in results if name is not None]
