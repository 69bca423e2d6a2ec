"""The service plus test-only routes, served through APP_ASGI_APP=tests.support.apps:app."""

from __future__ import annotations

import asyncio
import gc
import logging

from fastapi import Query

from service.app import create_app
from service.settings import get_settings

app = create_app(get_settings())


@app.get("/slow")
async def slow(seconds: float = Query(ge=0, le=120)) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/fail")
async def fail() -> None:
    raise RuntimeError("deliberate failure for the error-logging test")


@app.get("/log")
async def log_inside_request() -> dict[str, str]:
    logging.getLogger("service.example").warning("inside the request")
    return {"logged": "yes"}


@app.get("/loop")
async def running_loop() -> dict[str, str]:
    """The event loop class this worker really runs on (every profile declares uvloop): uvloop's or
    asyncio's own, under any subclass a server runs (hypercorn's supervised worker keeps its listeners)."""
    ran = type(asyncio.get_running_loop())
    loop = next((c for c in ran.__mro__ if c.__module__.split(".")[0] in {"uvloop", "asyncio"}), ran)
    return {"loop": f"{loop.__module__}.{loop.__qualname__}"}


@app.get("/gc")
async def garbage_collector() -> dict[str, int]:
    """How this worker's garbage collector is set (deploy/worker_gc.py): what it froze, when it collects."""
    return {"frozen": gc.get_freeze_count(), "young_threshold": gc.get_threshold()[0]}
