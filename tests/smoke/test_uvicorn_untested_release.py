"""With a uvicorn (and uvicorn-worker) release newer than deploy/uvicorn_internals.py was tested on,
both uvicorn profiles start, serve `GET /` and `/ws`, warn once per patch, and run uvicorn's own protocol.

devkit/releases.py makes the real server processes see uvicorn 0.99.0 while running the
installed code: a fork's venv right after `uv lock --upgrade` took a release we never tested.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from deploy.uvicorn_internals import GUNICORN_PATCHES, UVICORN_PATCHES
from devkit.process import LOOPBACK, ServerProcess, running_server
from devkit.releases import reported_releases

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

UNTESTED = {"uvicorn": "0.99.0", "uvicorn-worker": "0.99.0"}
PATCHES = {"uvicorn": UVICORN_PATCHES, "gunicorn": GUNICORN_PATCHES}
HTTP_1_0_UPGRADE = (
    b"GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture(scope="module", params=sorted(PATCHES))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = reported_releases(tmp_path_factory.mktemp("releases"), UNTESTED)
    # Two workers: the uvicorn profile runs them under deploy/supervisor.py.
    with running_server(request.param, {"APP_WORKERS": "2", "PYTHONPATH": str(folder)}) as running:
        yield running


def test_it_serves_http_and_websockets(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/", timeout=5)
    assert response.status_code == 200
    with connect(f"ws://{LOOPBACK}:{server.port}/ws", open_timeout=5) as websocket:
        websocket.send("still here")
        assert websocket.recv(timeout=5) == "still here"


def test_one_warning_line_per_patch(server: ServerProcess) -> None:
    warnings = [line for line in server.log().splitlines() if "is not guaranteed" in line]
    patches = PATCHES[server.profile]
    assert len(warnings) == len(patches), server.log()
    for patch in patches:
        (line,) = [line for line in warnings if patch.capability in line]
        assert f"{patch.distribution} 0.99.0 is outside" in line


def test_uvicorns_own_protocol_serves(server: ServerProcess) -> None:
    # WEBSOCKET_HTTP_VERSION's fallback, seen from outside: uvicorn tells the app an HTTP/1.0
    # upgrade is HTTP/1.1, so it is upgraded (with the patch, the app answers 400).
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as sock:
        sock.sendall(HTTP_1_0_UPGRADE)
        assert sock.recv(64).startswith(b"HTTP/1.1 101 ")
