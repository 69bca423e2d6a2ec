"""`GET /metrics`: Prometheus text format, summed over all workers, readable from allowed networks only."""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.metrics import CONTENT_TYPE_LATEST, render

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    settings = request.app.service_settings
    client = request.client.host if request.client else ""
    if not _allowed(client, settings.metrics_allow_ips):
        return JSONResponse({"detail": "Forbidden"}, status_code=403)
    return Response(render(settings.metrics_dir), media_type=CONTENT_TYPE_LATEST)


def _allowed(client: str, allow: tuple[str, ...]) -> bool:
    if "*" in allow:
        return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(item, strict=False) for item in allow)
