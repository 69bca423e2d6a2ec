"""A fixed-path route (the probes, /metrics) matches exactly what FastAPI's own route matches."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match

from service.api.fixed_path import FixedPathRoute


async def _endpoint() -> dict[str, str]:
    return {}


@pytest.mark.parametrize(
    ("path", "root_path", "method"),
    [
        ("/healthz", "", "GET"),
        ("/healthz", "", "HEAD"),
        ("/healthz", "", "POST"),  # the path, not the method: PARTIAL (405)
        ("/healthz/", "", "GET"),  # the router tries the other slash itself
        ("/healthz\n", "", "GET"),  # `$` matches before a final newline (a decoded %0A)
        ("/healthz/x", "", "GET"),
        ("/health", "", "GET"),
        ("/xhealthz", "", "GET"),
        ("/api/healthz", "/api", "GET"),
        ("/api/healthz", "", "GET"),
        ("/healthz", "/api", "GET"),
        ("/other/healthz", "/api", "GET"),
        ("/users/7", "", "GET"),
        ("", "", "GET"),
    ],
)
def test_it_matches_as_fastapis_route_does(path: str, root_path: str, method: str) -> None:
    scope = {"type": "http", "path": path, "root_path": root_path, "method": method}
    fixed = FixedPathRoute("/healthz", _endpoint, methods=["GET"])
    plain = APIRoute("/healthz", _endpoint, methods=["GET"])
    assert fixed.matches(dict(scope))[0] == plain.matches(dict(scope))[0]


def test_a_websocket_never_matches_it() -> None:
    scope = {"type": "websocket", "path": "/healthz", "root_path": ""}
    assert FixedPathRoute("/healthz", _endpoint, methods=["GET"]).matches(scope)[0] == Match.NONE


def test_a_path_with_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match="has parameters"):
        FixedPathRoute("/users/{user_id}", _endpoint, methods=["GET"])
