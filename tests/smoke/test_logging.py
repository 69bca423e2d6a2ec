"""One log format on every server: every line JSON, one access line per request, errors once."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import pytest

from deploy.profiles import PROFILES
from devkit.process import running_server

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

ACCESS_FIELDS = {
    "time", "level", "logger", "message", "method", "path", "status",
    "duration_ms", "client", "request_id", "pid", "server",
}  # fmt: skip


def _json_lines(output: str) -> list[dict[str, Any]]:
    lines = [line for line in output.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_json_logs_are_uniform(profile: str) -> None:
    env = {"APP_LOG_FORMAT": "json", "APP_WORKERS": "2", "APP_ASGI_APP": "tests.support.apps:app"}
    with running_server(profile, env) as server:
        ok = httpx.get(f"{server.base_url}/", headers={"X-Request-ID": "log-test-request-1"})
        failed = httpx.get(f"{server.base_url}/fail", headers={"X-Request-ID": "log-test-failure-1"})
        inside = httpx.get(f"{server.base_url}/log", headers={"X-Request-ID": "log-test-inside-1"})
        httpx.get(f"{server.base_url}/healthz")
        workers = server.worker_pids() | {server.pid}
        server.signal(signal.SIGTERM)
        server.wait_exit(timeout=30)
        records = _json_lines(server.log())
    assert (ok.status_code, failed.status_code, inside.status_code) == (200, 500, 200)

    access = [r for r in records if r["logger"] == "service.access"]
    assert [r["path"] for r in access] == ["/", "/fail", "/log"]  # probes are left out
    line = access[0]
    assert set(line) >= ACCESS_FIELDS
    assert line["request_id"] == ok.headers["x-request-id"] == "log-test-request-1"
    assert (line["method"], line["status"], line["server"]) == ("GET", 200, profile)
    assert line["client"].startswith("127.0.0.1:")
    assert line["pid"] in workers
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
