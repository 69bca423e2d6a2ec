"""The service plus test-only routes for the resilience suite (APP_ASGI_APP=tests.resilience.apps:app)."""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import Query, Request

from service.app import create_app
from service.settings import get_settings

app = create_app(get_settings())


@app.get("/pid")
async def pid() -> dict[str, int]:
    """Which worker process answered."""
    return {"pid": os.getpid()}


@app.get("/slow")
async def slow(seconds: float = Query(ge=0, le=120)) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/whoami")
async def whoami(request: Request) -> dict[str, str | None]:
    """What the app believes about the peer, after the proxy-header middleware."""
    return {
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
    }


@app.post("/consume")
async def consume(request: Request) -> dict[str, int]:
    """Read the whole body as a stream (the limits middleware counts it as it arrives)."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return {"received": size}


@app.get("/block")
async def block(seconds: float = Query(ge=0, le=120)) -> dict[str, float]:
    """A synchronous sleep inside `async def`: the worker's whole event loop stops."""
    time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point
    return {"blocked": seconds}


_leaked: list[bytearray] = []


@app.get("/leak")
async def leak(mib: int = Query(ge=1, le=64)) -> dict[str, int]:
    """Keep `mib` more MiB for the worker's lifetime (every page touched: resident)."""
    _leaked.append(bytearray(b"\x01" * (mib * 1024 * 1024)))
    return {"pid": os.getpid(), "leaked_mib": len(_leaked) * mib}
