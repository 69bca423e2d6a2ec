"""The service plus test-only routes, served through APP_ASGI_APP=tests.support.apps:app."""

from __future__ import annotations

import asyncio

from fastapi import Query

from service.app import create_app
from service.settings import get_settings

app = create_app(get_settings())


@app.get("/slow")
async def slow(seconds: float = Query(ge=0, le=120)) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}
