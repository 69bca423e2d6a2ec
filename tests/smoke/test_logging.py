"""One log format on every server: every line JSON, one access line per request, errors once, none lost."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deploy.profiles import PROFILES
from devkit.process import running_server

pytestmark = pytest.mark.smoke

APP_FIELDS = {"time", "level", "logger", "message", "request_id", "pid", "server"}
ACCESS_FIELDS = APP_FIELDS | {"method", "path", "status", "duration_ms", "client", "scheme", "version"}
# What an error line adds.
ERROR_FIELDS = {"exc_info", "stack_info"}
# The burst sent right before SIGTERM: small, but several connections on two workers at once.
BURST_CONNECTIONS = 4
BURST_PER_CONNECTION = 40


def _json_lines(output: str) -> list[dict[str, Any]]:
    lines = [line for line in output.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


@dataclass
class Run:
    profile: str
    records: list[dict[str, Any]]
    statuses: tuple[int, int, int]
    first_request_id: str
    workers: set[int]
    burst_ids: list[str]


def _burst(base_url: str, connection: int) -> list[str]:
    """Requests on one keep-alive connection; the ids of those answered 200."""
    answered = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for number in range(BURST_PER_CONNECTION):
            request_id = f"burst-{connection}-{number:04d}"
            if client.get("/", headers={"X-Request-ID": request_id}).status_code == 200:
                answered.append(request_id)
    return answered


@pytest.fixture(scope="module", params=sorted(PROFILES))
def logged_run(request: pytest.FixtureRequest, base_url_option: str | None) -> Iterator[Run]:
    """One 2-worker server per profile: a few requests, a burst, SIGTERM straight after; its log."""
    if base_url_option:
        pytest.skip("starts its own server process; not run against --base-url")
    profile = request.param
    env = {"APP_LOG_FORMAT": "json", "APP_WORKERS": "2", "APP_ASGI_APP": "tests.support.apps:app"}
    with running_server(profile, env) as server:
        ok = httpx.get(f"{server.base_url}/", headers={"X-Request-ID": "log-test-request-1"})
        failed = httpx.get(f"{server.base_url}/fail", headers={"X-Request-ID": "log-test-failure-1"})
        inside = httpx.get(f"{server.base_url}/log", headers={"X-Request-ID": "log-test-inside-1"})
        httpx.get(f"{server.base_url}/healthz")
        with ThreadPoolExecutor(BURST_CONNECTIONS) as pool:
            answered = pool.map(_burst, [server.base_url] * BURST_CONNECTIONS, range(BURST_CONNECTIONS))
            burst_ids = [request_id for ids in answered for request_id in ids]
        workers = server.worker_pids() | {server.pid}
        server.signal(signal.SIGTERM)
        server.wait_exit(timeout=30)
        yield Run(
            profile=profile,
            records=_json_lines(server.log()),
            statuses=(ok.status_code, failed.status_code, inside.status_code),
            first_request_id=ok.headers["x-request-id"],
            workers=workers,
            burst_ids=burst_ids,
        )


def test_json_logs_are_uniform(logged_run: Run) -> None:
    profile, records = logged_run.profile, logged_run.records
    assert logged_run.statuses == (200, 500, 200)

    access = [r for r in records if r["logger"] == "service.access"]
    assert [r["path"] for r in access[:3]] == ["/", "/fail", "/log"]  # probes are left out
    line = access[0]
    assert set(line) == ACCESS_FIELDS
    assert line["request_id"] == logged_run.first_request_id == "log-test-request-1"
    assert (line["method"], line["status"], line["server"]) == ("GET", 200, profile)
    assert line["client"].startswith("127.0.0.1:")
    assert line["pid"] in logged_run.workers
    assert line["time"].endswith("+00:00")
    assert isinstance(line["duration_ms"], float)
    assert access[1]["status"] == 500

    errors = [r for r in records if r["level"] == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0]["request_id"] == "log-test-failure-1"
    assert "deliberate failure" in errors[0]["exc_info"]
    assert "Traceback" in errors[0]["exc_info"]

    app_lines = [r for r in records if r["logger"] == "service.example"]
    assert [r["request_id"] for r in app_lines] == ["log-test-inside-1"]
    assert all(r["server"] == profile for r in records)
    # Only the documented fields: no server extras such as uvicorn's ANSI `color_message`.
    others = [r for r in records if r["logger"] != "service.access"]
    assert all(APP_FIELDS <= set(r) <= APP_FIELDS | ERROR_FIELDS for r in others), others


def test_no_access_line_is_lost_or_torn(logged_run: Run) -> None:
    # Every line of the log parsed as one JSON object (`_json_lines`): none torn or mixed.
    assert len(logged_run.burst_ids) == BURST_CONNECTIONS * BURST_PER_CONNECTION
    burst = [r for r in logged_run.records if r["logger"] == "service.access" and r["path"] == "/"]
    logged = sorted(r["request_id"] for r in burst if r["request_id"].startswith("burst-"))
    assert logged == sorted(logged_run.burst_ids)  # exactly one line each, the last ones included
    assert {r["pid"] for r in burst} <= logged_run.workers
