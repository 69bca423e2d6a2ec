from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.multiprocess_metrics import REQUESTS
from service.settings import Settings


def _count(method: str, route: str, status: str) -> float:
    return REQUESTS.labels(method, route, status)._value.get()


def test_route_template_labels_bound_the_cardinality() -> None:
    app = create_app(Settings())

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    before = _count("GET", "/items/{item_id}", "200"), _count("OTHER", "<unmatched>", "405")
    with TestClient(app) as client:
        for item_id in range(5):
            client.get(f"/items/{item_id}")
        client.request("BREW", "/nothing-here")
    assert _count("GET", "/items/{item_id}", "200") - before[0] == 5
    assert _count("OTHER", "<unmatched>", "405") - before[1] in (0, 1)
    total_other = sum(
        metric.value
        for family in REQUESTS.collect()
        for metric in family.samples
        if metric.labels.get("method") == "OTHER"
    )
    assert total_other >= 1


def test_metrics_endpoint_and_switch() -> None:
    with TestClient(create_app(Settings()), client=("10.1.2.3", 1000)) as client:
        assert "http_requests_total" in client.get("/metrics").text
    with TestClient(create_app(Settings()), client=("203.0.113.9", 1000)) as client:
        assert client.get("/metrics").status_code == 403  # a public address is not a scraper
    with TestClient(create_app(Settings(metrics_enabled=False))) as client:
        assert client.get("/metrics").status_code == 404
