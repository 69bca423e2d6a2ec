from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def test_readiness_is_503_until_startup_has_finished() -> None:
    app = create_app(Settings())
    client = TestClient(app)  # no context manager: lifespan not started yet
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").json()["status"] == "starting"
    assert client.get("/healthz").status_code == 200
    with client:
        assert client.get("/readyz").status_code == 200


def test_readiness_reports_failing_checks() -> None:
    async def database() -> None:
        raise ConnectionError("refused")

    async def cache() -> None:
        return None

    with TestClient(create_app(Settings(), readiness_checks=[database, cache])) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "failing", "failing": ["database"]}


def test_docs_off_in_production() -> None:
    with TestClient(create_app(Settings(env="production"))) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/").status_code == 200


def test_unexpected_error_is_a_json_500_without_details(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert "internal detail" not in response.text
    assert "internal detail" in caplog.text


def test_forwarded_headers_only_from_trusted_proxies() -> None:
    app = create_app(Settings(forwarded_allow_ips="10.0.0.1"))  # type: ignore[arg-type]

    @app.get("/client")
    async def client_address(request: Request) -> dict[str, str]:
        return {"host": request.client.host if request.client else "", "scheme": request.url.scheme}

    spoof = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with TestClient(app, client=("198.51.100.9", 5000)) as untrusted:
        assert untrusted.get("/client", headers=spoof).json() == {
            "host": "198.51.100.9",
            "scheme": "http",
        }
    with TestClient(app, client=("10.0.0.1", 5000)) as trusted:
        assert trusted.get("/client", headers=spoof).json() == {
            "host": "203.0.113.7",
            "scheme": "https",
        }


def test_drain_file_turns_readiness_off_and_closes_connections(tmp_path: Path) -> None:
    flag = tmp_path / "draining"
    with TestClient(create_app(Settings(drain_file=flag))) as client:
        assert client.get("/readyz").status_code == 200
        assert "connection" not in client.get("/").headers
        flag.touch()
        deadline = time.monotonic() + 3
        while client.get("/readyz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/readyz").json()["status"] == "stopping"
        response = client.get("/")
        assert response.status_code == 200
        assert response.headers["connection"] == "close"


def test_a_lifespan_of_yours_opens_before_ready_and_closes_after_serving() -> None:
    seen: list[str] = []

    @asynccontextmanager
    async def client_pool(app: FastAPI) -> AsyncIterator[None]:
        seen.append(f"open while {app.state.lifecycle}")
        app.state.pool = "open"
        yield
        app.state.pool = "closed"
        seen.append(f"closed while {app.state.lifecycle}")

    router = APIRouter()

    @router.get("/pool")
    async def pool(request: Request) -> dict[str, str]:
        return {"pool": request.app.state.pool}

    app = create_app(Settings(), lifespan=client_pool, routers=[router])
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/pool").json() == {"pool": "open"}
    assert seen == ["open while starting", "closed while stopping"]
    assert app.state.pool == "closed"


def test_a_failing_lifespan_of_yours_stops_startup() -> None:
    @asynccontextmanager
    async def unreachable(_app: FastAPI) -> AsyncIterator[None]:
        raise ConnectionError("the database is down")
        yield

    with pytest.raises(ConnectionError), TestClient(create_app(Settings(), lifespan=unreachable)):
        pass


@pytest.mark.parametrize("demo_routes", [True, False])
def test_demo_routes_are_served_only_when_asked(demo_routes: bool) -> None:
    with TestClient(create_app(Settings(), demo_routes=demo_routes)) as client:
        statuses = {
            "/echo": client.post("/echo", json={"message": "hi"}).status_code,
            "/events": client.head("/events").status_code,
            "/rooms/lobby/events": client.head("/rooms/lobby/events").status_code,
        }
        assert client.get("/").status_code == 200
        assert client.get("/readyz").status_code == 200
        paths = set(client.get("/openapi.json").json()["paths"])
    if demo_routes:
        assert statuses["/echo"] == 200
        assert {"/echo", "/events"} <= paths
    else:
        assert set(statuses.values()) == {404}
        assert not {path for path in paths if path.startswith(("/echo", "/ws", "/events", "/rooms"))}


def test_no_router_of_yours_shadows_the_probes() -> None:
    yours = APIRouter()

    @yours.get("/healthz")
    @yours.get("/readyz")
    async def not_a_probe() -> dict[str, str]:
        return {"status": "yours"}

    with TestClient(create_app(Settings(), routers=[yours])) as client:
        assert client.get("/healthz").json() == {"status": "ok", "failing": []}
        assert client.get("/readyz").json() == {"status": "ok", "failing": []}


def test_your_routers_come_before_the_root_and_the_demo() -> None:
    """Yours are matched right after the probes and /metrics: a route of yours answers a path the
    demo has, and a request to yours does not pass the demo's routes first."""
    yours = APIRouter()

    @yours.get("/")
    @yours.post("/echo")
    async def answered_by_yours() -> dict[str, str]:
        return {"answered_by": "yours"}

    with TestClient(create_app(Settings(), routers=[yours])) as client:
        assert client.get("/").json() == {"answered_by": "yours"}
        assert client.post("/echo", json={"message": "x"}).json() == {"answered_by": "yours"}
        assert client.get("/healthz").json() == {"status": "ok", "failing": []}


def test_no_router_of_yours_shadows_the_metrics() -> None:
    yours = APIRouter()

    @yours.get("/metrics")
    async def not_the_metrics() -> dict[str, str]:
        return {"metrics": "yours"}

    settings = Settings(metrics_allow_ips="*")  # type: ignore[arg-type]  # the test client's host
    with TestClient(create_app(settings, routers=[yours])) as client:
        assert "http_requests_total" in client.get("/metrics").text
