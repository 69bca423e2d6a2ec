"""gunicorn-asgi with a gunicorn release no patch of deploy/gunicorn_internals.py was tested on.

gunicorn reports 99.0.0 (devkit/releases.py) while its real code runs, as in a fork's venv
after `uv lock --upgrade`: the service starts with gunicorn's own arbiter and `asgi` worker,
serves `GET /` and `/ws`, logs one warning line per patch, and refuses only the setting that
cannot work without a patch (APP_REQUEST_HEAD_TIMEOUT), in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from deploy.profiles import load_profile
from devkit.process import ServerProcess, refused_at_startup, running_server
from devkit.releases import reported_releases

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

# What the profile declares of gunicorn's internals: each gets its one warning line.
PATCHES = tuple(patch for patch in load_profile("gunicorn-asgi").carried if patch.distribution == "gunicorn")


@pytest.fixture(scope="module")
def untested_gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reported_releases(tmp_path_factory.mktemp("releases"), {"gunicorn": "99.0.0"})


@pytest.fixture(scope="module")
def server(untested_gunicorn: Path) -> Iterator[ServerProcess]:
    env = {"APP_WORKERS": "2", "PYTHONPATH": str(untested_gunicorn)}
    with running_server("gunicorn-asgi", env) as running:
        yield running


def test_serves_http_and_websockets_with_gunicorns_own_worker(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"message": "Hello, ASGI with FastAPI!"}
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as websocket:
        websocket.send("still here")
        assert websocket.recv(timeout=5) == "still here"
    assert "Using worker: asgi" in server.log()


def test_one_warning_line_per_patch(server: ServerProcess) -> None:
    log = server.log()
    for patch in PATCHES:
        lines = [line for line in log.splitlines() if patch.capability in line]
        assert len(lines) == 1, f"{patch.capability!r}:\n{log}"
        assert "gunicorn 99.0.0 is outside the releases" in lines[0]
        assert "is not guaranteed" in lines[0]
    assert len([line for line in log.splitlines() if "is not guaranteed" in line]) == len(PATCHES), log
    assert "Traceback" not in log


def test_a_head_timeout_set_explicitly_is_refused_in_one_line(untested_gunicorn: Path) -> None:
    line = refused_at_startup(
        "gunicorn-asgi", {"APP_REQUEST_HEAD_TIMEOUT": "7", "PYTHONPATH": str(untested_gunicorn)}
    )
    assert "APP_REQUEST_HEAD_TIMEOUT" in line
    assert "gunicorn 99.0.0" in line
