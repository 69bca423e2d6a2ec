"""The project's rules in a real Prometheus scraping a real 2-worker service.

Prometheus (the distribution's package, on 127.0.0.1, its storage in a temporary directory,
stopped by PID) scrapes the service every second and evaluates the shipped rules, generated
(devkit/alert_rules.py) for this server's APP_MAX_CONCURRENCY and with `window_scale=1/60`: an
hour is a minute, 5 minutes are 5 s, a `for` of 2 minutes is 2 s. That parameter exists for
this test; the shipped files never use it.

Clean traffic first, with slow requests, a WebSocket session and an event stream: the error
ratio is recorded as exactly 0 and the fast-burn alert stays silent; requests held open show as
the exact share of the pod's capacity (workers x APP_MAX_CONCURRENCY); a worker killed by PID
and replaced is counted as one worker start. Then a share of the requests fail with 500: the
recorded error ratio follows, and the fast-burn alert goes pending, then firing. Last, every
query of the dashboard (k8s/components/dashboard) runs in this Prometheus and has data.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from devkit import dashboard
from devkit.alert_rules import Parameters, rule_file
from devkit.process import LOOPBACK, ServerProcess, free_port, running_server
from tests.resilience.support import wait_for, wait_workers
from tests.support.tools import require_tools

pytestmark = pytest.mark.resilience

WINDOW_SCALE = 1 / 60
SCRAPE_SECONDS = 1
MAX_CONCURRENCY = 10
WORKERS = 2
HELD = 6  # requests held open for the saturation figure
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: {scrape}s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: asgi-deploy
    static_configs:
      - targets: ["{target}"]
"""
FAST_BURN = "AsgiDeployErrorBudgetFastBurn"
WAIT_SECONDS = 15.0


class Prometheus:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.url = f"http://{LOOPBACK}:{port}"
        self.process = process

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alert_state(self, name: str) -> str | None:
        alerts = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        states = [a["state"] for a in alerts if a["labels"]["alertname"] == name]
        return states[0] if states else None


@contextlib.contextmanager
def running_prometheus(prometheus: str, target: str, rules: str, folder: Path) -> Iterator[Prometheus]:
    (folder / "rules.yaml").write_text(rules)
    config = PROMETHEUS_CONFIG.format(rules=folder / "rules.yaml", target=target, scrape=SCRAPE_SECONDS)
    (folder / "prometheus.yml").write_text(config)
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        server = Prometheus(port, process)
        ready = wait_for(lambda: _answers(f"{server.url}/-/ready"), WAIT_SECONDS, interval=0.1)
        assert ready is not None, (folder / "prometheus.log").read_text()
        yield server
    finally:
        process.terminate()  # by PID, through Popen
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


class Traffic:
    """GET requests from a thread until stopped, bounded in count and time: `paths` in turn."""

    def __init__(
        self, base_url: str, paths: list[str], max_requests: int = 2000, max_seconds: float = 30
    ) -> None:
        self.base_url, self.paths = base_url, paths
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.statuses: list[int] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while (
            not self.stopped.is_set()
            and len(self.statuses) < self.max_requests
            and time.monotonic() < deadline
        ):
            path = self.paths[len(self.statuses) % len(self.paths)]
            with contextlib.suppress(httpx.HTTPError):  # a request on a worker being killed
                self.statuses.append(httpx.get(f"{self.base_url}{path}", timeout=5).status_code)
            time.sleep(0.02)


def eventually(probe: Callable[[], bool], what: Callable[[], str], timeout: float = WAIT_SECONDS) -> None:
    if wait_for(probe, timeout, interval=0.2) is None:
        raise AssertionError(f"not within {timeout:.0f}s: {what()}")


def realtime_sessions(server: ServerProcess) -> None:
    """One WebSocket session and one event stream, both ended by the client."""
    with connect(f"ws://{LOOPBACK}:{server.port}/ws") as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
    with httpx.stream("GET", f"{server.base_url}/events?interval=0.05", timeout=10) as stream:
        next(line for line in stream.iter_lines() if line.startswith("data:"))


def dashboard_queries() -> list[str]:
    """The dashboard's panel queries, with its variables as Grafana sets them for "All"."""
    board = json.loads(dashboard.DASHBOARD.read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    rate_interval = f"{int(4 * SCRAPE_SECONDS)}s"  # Grafana: at least 4 scrape intervals
    return [
        q.replace("$namespace", ".*").replace("$profile", ".*").replace("$__rate_interval", rate_interval)
        for q in queries
    ]


def hold_requests(server: ServerProcess, count: int, seconds: float) -> list[threading.Thread]:
    threads = [
        threading.Thread(
            target=lambda: httpx.get(f"{server.base_url}/slow?seconds={seconds}", timeout=seconds + 5),
            daemon=True,
        )
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads


def test_rules_in_a_real_prometheus(tmp_path: Path) -> None:
    binary = require_tools("prometheus", install="apt-get install prometheus")["prometheus"]
    rules = rule_file(Parameters(window_scale=WINDOW_SCALE, max_concurrency=MAX_CONCURRENCY))
    env = {
        "APP_ASGI_APP": "tests.support.apps:app",  # adds /fail (500) and /slow
        "APP_WORKERS": str(WORKERS),
        "APP_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        "APP_ACCESS_LOG": "false",
    }
    with running_server("uvicorn", env) as server:
        workers = wait_workers(server, WORKERS)
        with running_prometheus(binary, f"{LOOPBACK}:{server.port}", rules, tmp_path) as prometheus:
            selector = '{job="asgi-deploy", instance="%s:%d"}' % (LOOPBACK, server.port)  # noqa: UP031
            with Traffic(server.base_url, ["/", "/", "/", "/slow?seconds=0.6"], max_seconds=20):
                # Clean traffic: the ratio is recorded, and it is exactly 0.
                ratio = "asgi_deploy:http_requests_errors:ratio_rate5m"
                realtime_sessions(server)
                eventually(lambda: prometheus.value(ratio) == 0.0, lambda: f"{ratio} recorded as 0")
                slow = "asgi_deploy:http_requests_slow:ratio_rate1h"
                eventually(lambda: (prometheus.value(slow) or 0) > 0, lambda: f"{slow} above 0")

            # Held requests plus the scrape itself, over 2 workers x APP_MAX_CONCURRENCY.
            held = hold_requests(server, HELD, seconds=4)
            expected = (HELD + 1) / (WORKERS * MAX_CONCURRENCY)
            capacity = f"asgi_deploy_instance:http_requests_in_progress:ratio_capacity{selector}"
            seen: list[float | None] = []

            def saturated() -> bool:
                seen.append(prometheus.value(capacity))
                return seen[-1] == expected

            eventually(saturated, lambda: f"{capacity} = {expected} (seen {seen})")
            for thread in held:
                thread.join(timeout=10)

            # A worker killed (a crash) and replaced: a new pid in a pod up for over 15 "minutes".
            starts = f"asgi_deploy_instance:worker_starts:count15m{selector}"
            eventually(lambda: prometheus.value(starts) == 0, lambda: f"{starts} = 0: the pod counts")
            os.kill(min(workers), signal.SIGKILL)
            replaced = wait_for(lambda: len(server.worker_pids() - workers) == 1, WAIT_SECONDS)
            assert replaced is not None, server.log()
            eventually(lambda: prometheus.value(starts) == 1, lambda: f"{starts} = 1")
            assert prometheus.alert_state(FAST_BURN) is None  # silent all along: no errors

            # Half the requests fail: the ratio follows (the scrapes are requests too), and the
            # fast-burn alert goes pending, then firing.
            states: list[str | None] = []

            def firing() -> bool:
                states.append(prometheus.alert_state(FAST_BURN))
                return states[-1] == "firing"

            with Traffic(server.base_url, ["/", "/fail"], max_seconds=20) as failing:
                eventually(firing, lambda: f"{FAST_BURN} firing (states seen: {states})")
                now = prometheus.value("asgi_deploy:http_requests_errors:ratio_rate5m")
            assert 500 in failing.statuses
            assert "pending" in states, states
            assert states.index("pending") < states.index("firing")
            assert now is not None
            assert 0.3 < now <= 0.5
            slow_burn = prometheus.alert_state("AsgiDeployErrorBudgetSlowBurn")
            assert slow_burn in {None, "pending"}  # its `for` is an "hour": a minute here

            # Every dashboard panel's query is valid PromQL and has data, this traffic seen.
            empty = [q for q in dashboard_queries() if not prometheus.query(q)]
            assert empty == []
