"""The worked example of docs/building.md (examples/quotes.py), served as a real process.

Its router answers, its setting is read, its resource opens before the worker is ready and
closes at shutdown after the last request, its readiness check takes the worker out while
the upstream fails, and the app without the demo routes keeps the HTTP contract (the
contract's checks that need no demo route run here again, against the example).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from deploy.profiles import PROFILES as ALL_PROFILES
from devkit.process import LOOPBACK, ServerProcess, running_server
from tests.smoke import test_http_contract as contract

pytestmark = [pytest.mark.smoke, pytest.mark.own_app, pytest.mark.usefixtures("local_only")]

PROFILES = sorted(ALL_PROFILES)
WORKERS = 2
QUOTE = "Simple things should be simple."
CLOSED = "quotes client closed"


class Upstream(ThreadingHTTPServer):
    """The quotes service the example calls: a real HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), UpstreamHandler)
        self.healthy = True
        self.hold = threading.Event()  # while clear, /quote waits for `release`
        self.hold.set()
        self.arrived = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"


class UpstreamHandler(BaseHTTPRequestHandler):
    server: Upstream

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200 if self.server.healthy else 503, b'{"status": "ok"}')
        elif self.path == "/quote":
            self.server.arrived.set()
            self.server.hold.wait(timeout=30)
            self._answer(200, b'{"text": "%s"}' % QUOTE.encode())
        else:
            self._answer(404, b"{}")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def example_env(upstream: Upstream, **extra: str) -> dict[str, str]:
    return {
        "APP_ASGI_APP": "examples.quotes:app",
        "APP_QUOTES_URL": upstream.url,
        "APP_WORKERS": str(WORKERS),
        **extra,
    }


@pytest.fixture(scope="module", params=PROFILES)
def example(request: pytest.FixtureRequest, upstream: Upstream) -> Iterator[ServerProcess]:
    with running_server(request.param, example_env(upstream)) as server:
        yield server


@pytest.fixture
def base_url(example: ServerProcess) -> str:
    """The HTTP contract's checks below run against the example."""
    return example.base_url


def test_the_router_answers_with_the_upstream_quote(example: ServerProcess) -> None:
    response = httpx.get(f"{example.base_url}/quotes/today")
    assert response.status_code == 200
    assert response.json() == {"text": QUOTE}


def test_the_demo_routes_are_not_served(example: ServerProcess) -> None:
    assert httpx.post(f"{example.base_url}/echo", json={"message": "hi"}).status_code == 404
    for path in ("/events", "/ws", "/rooms/lobby/events"):
        assert httpx.get(f"{example.base_url}{path}").status_code == 404, path
    paths = httpx.get(f"{example.base_url}/openapi.json").json()["paths"]
    assert sorted(paths) == ["/", "/healthz", "/quotes/today", "/readyz"]


def test_readiness_fails_while_the_upstream_does(example: ServerProcess, upstream: Upstream) -> None:
    upstream.healthy = False
    try:
        # Every worker runs the check on each probe: a few probes reach both.
        for _ in range(6):
            response = httpx.get(f"{example.base_url}/readyz")
            assert response.status_code == 503
            assert response.json() == {"status": "failing", "failing": ["quotes_upstream"]}
    finally:
        upstream.healthy = True
    assert httpx.get(f"{example.base_url}/readyz").status_code == 200


@pytest.mark.parametrize("profile", PROFILES)
def test_the_resource_closes_at_shutdown_after_the_last_request(profile: str, upstream: Upstream) -> None:
    # As deployed: a drain window before the graceful stop.
    env = example_env(upstream, APP_DRAIN_SECONDS="1", APP_GRACEFUL_TIMEOUT="10")
    upstream.hold.clear()
    upstream.arrived.clear()
    try:
        with running_server(profile, env) as server, ThreadPoolExecutor(1) as pool:
            assert CLOSED not in server.log()
            in_flight = pool.submit(httpx.get, f"{server.base_url}/quotes/today", timeout=30)
            assert upstream.arrived.wait(timeout=10)  # the request is inside the handler, on the client
            server.signal(signal.SIGTERM)
            _wait_for_readiness(server, 503)  # the drain window: out of the endpoints, still serving
            upstream.hold.set()
            response = in_flight.result(timeout=30)
            code = server.wait_exit(timeout=20)
            log = server.log()
    finally:
        upstream.hold.set()
    assert response.status_code == 200, log
    assert response.json() == {"text": QUOTE}
    assert code == 0, log
    assert log.count(CLOSED) == WORKERS, log


def _wait_for_readiness(server: ServerProcess, status: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpx.get(f"{server.base_url}/readyz").status_code == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"/readyz never answered {status}:\n{server.log()}")


# The HTTP contract's checks that need no demo route, against the example.
globals().update(
    {
        name: check
        for name, check in vars(contract).items()
        if name.startswith("test_")
        and not any(mark.name == "demo_routes" for mark in getattr(check, "pytestmark", []))
    }
)
