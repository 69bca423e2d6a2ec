"""The worked example of docs/building.md: a service of your own, built on the template.

It serves `GET /quotes/today` from an upstream HTTP service: one setting of its own
(APP_QUOTES_URL), one resource opened at start-up and closed at shutdown (an
`httpx.AsyncClient` on `app.state`), one readiness check, and no demo routes.
Serve it with APP_ASGI_APP=examples.quotes:app; tests/smoke/test_building_example.py does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel

from service.app import create_app
from service.settings import Settings, get_settings

logger = logging.getLogger("examples.quotes")

# --8<-- [start:router]
router = APIRouter(prefix="/quotes", tags=["quotes"])


class Quote(BaseModel):
    text: str


@router.get("/today")
async def quote_of_the_day(request: Request) -> Quote:
    upstream: httpx.AsyncClient = request.app.state.quotes
    try:
        response = await upstream.get("/quote")
        response.raise_for_status()
    except httpx.HTTPError:
        # The upstream's failure is a 502 of ours, not a 500: the request itself was fine.
        raise HTTPException(status_code=502, detail="the quotes upstream is unavailable") from None
    return Quote(text=response.json()["text"])


# --8<-- [end:router]


# --8<-- [start:app]
def build_app(settings: Settings) -> FastAPI:
    if settings.quotes_url is None:
        raise RuntimeError("APP_QUOTES_URL is not set: the quotes service has no upstream")
    base_url = str(settings.quotes_url)

    @asynccontextmanager
    async def quotes_client(app: FastAPI) -> AsyncIterator[None]:
        # Opened before this worker reports ready; closed after its last request has ended.
        async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:
            app.state.quotes = client
            yield
        logger.info("quotes client closed")

    async def quotes_upstream() -> None:
        # A readiness check: raise while the upstream is unusable (/readyz then answers 503).
        response = await app.state.quotes.get("/healthz")
        response.raise_for_status()

    app = create_app(
        settings,
        readiness_checks=[quotes_upstream],
        lifespan=quotes_client,
        routers=[router],
        demo_routes=False,
    )
    return app


app = build_app(get_settings())
# --8<-- [end:app]
