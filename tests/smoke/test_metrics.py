"""Metrics are the sum over every worker: N requests to a 3-worker server scrape as exactly N."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.profiles import PROFILES
from devkit.process import running_server

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_request_total_is_summed_over_all_workers(profile: str, tmp_path: Path) -> None:
    requests = 60
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale file of an earlier run")
    env = {"APP_WORKERS": "3", "APP_METRICS_DIR": str(metrics_dir)}
    with running_server(profile, env) as server:
        for _ in range(requests):
            # A new connection each time, so the kernel spreads them over the workers.
            assert httpx.get(f"{server.base_url}/").status_code == 200
        httpx.get(f"{server.base_url}/no/such/page")
        scrape = httpx.get(f"{server.base_url}/metrics")
        writers = {p.name for p in metrics_dir.glob("counter_*.db")}
    assert "counter_99999.db" not in writers  # emptied at start
    assert len(writers) >= 2, f"requests reached only {writers}: the sum proves nothing"
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    totals = _samples(scrape.text, "http_requests_total")
    root = (("method", "GET"), ("route", "/"), ("status", "200"))
    assert totals[root] == requests
    assert totals[(("method", "GET"), ("route", "<unmatched>"), ("status", "404"))] == 1
    in_progress = _samples(scrape.text, "http_requests_in_progress")
    assert in_progress[(("method", "GET"),)] == 1  # the scrape itself
    assert _samples(scrape.text, "http_request_duration_seconds_count")[root] == requests
    # No session yet, and every long-lived route already reads 0 (not "no data") on a dashboard.
    assert _samples(scrape.text, "realtime_sessions_open") == {
        (("kind", "websocket"), ("route", "/ws")): 0,
        (("kind", "websocket"), ("route", "/rooms/{room}")): 0,
        (("kind", "event_stream"), ("route", "/events")): 0,
        (("kind", "event_stream"), ("route", "/rooms/{room}/events")): 0,
    }
    rss = _samples(scrape.text, "process_worker_resident_memory_bytes")
    assert len(rss) >= 2  # one series per worker (pid label), at least the scraped one fresh
    assert all(value > 10_000_000 for value in rss.values())


def test_metrics_refused_outside_the_allow_list() -> None:
    with running_server("uvicorn", {"APP_METRICS_ALLOW_IPS": "10.9.9.9"}) as server:
        response = httpx.get(f"{server.base_url}/metrics")
    assert response.status_code == 403
