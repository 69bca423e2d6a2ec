"""`GET /metrics`: Prometheus text format, summed over all workers, readable from allowed networks only."""

from __future__ import annotations

import functools

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from service.api.fixed_path import FixedPathRoute
from service.ip_lists import IPAllowList
from service.multiprocess_metrics import CONTENT_TYPE_LATEST, render


def add_metrics_route(app: FastAPI) -> None:
    """`/metrics` as a route of the app's own, not a router: see `service.api.health.add_probes`."""
    app.router.add_api_route(
        "/metrics", metrics, methods=["GET"], include_in_schema=False, route_class_override=FixedPathRoute
    )


async def metrics(request: Request) -> Response:
    settings = request.app.service_settings
    client = request.client.host if request.client else ""
    if client not in _allow_list(settings.metrics_allow_ips):
        return JSONResponse({"detail": "Forbidden"}, status_code=403)
    return Response(render(settings.metrics_dir), media_type=CONTENT_TYPE_LATEST)


@functools.cache
def _allow_list(items: tuple[str, ...]) -> IPAllowList:
    return IPAllowList(items)  # parsed once per distinct setting, not on every scrape
