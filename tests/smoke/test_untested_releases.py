"""A fork that took releases newer than any carried patch was tested on still serves, on every profile.

Each library a profile patches (deploy/<server>_internals.py), and the libraries the app uses,
report a release beyond every tested range (devkit/releases.py), as in a venv right after
`uv lock --upgrade`. The server starts, `GET /` and `/ws` work, and the launcher logs exactly one
warning line per capability that release does not guarantee (docs/upstream.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from websockets.sync.client import connect

from deploy.carried import installed_version
from deploy.profiles import PROFILES, load_profile
from devkit.process import ServerProcess, running_server
from devkit.releases import reported_releases

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

APP_LIBRARIES = ("fastapi", "starlette", "prometheus-client", "pydantic")


def untested_release(distribution: str, tested: list[str]) -> str:
    """The first minor (then major) release after the installed one that no tested range admits."""
    current = Version(installed_version(distribution) or "0")
    candidates = [f"{current.major}.{current.minor + step}.0" for step in range(1, 20)]
    candidates += [f"{current.major + step}.0.0" for step in range(1, 5)]
    for candidate in candidates:
        if not any(Version(candidate) in SpecifierSet(spec) for spec in tested):
            return candidate
    raise AssertionError(f"no release of {distribution} outside {tested}")


def untested_releases(profile: str) -> dict[str, str]:
    tested: dict[str, list[str]] = {name: [] for name in APP_LIBRARIES}
    for patch in load_profile(profile).carried:
        tested.setdefault(patch.distribution, []).append(patch.tested)
    return {name: untested_release(name, specs) for name, specs in tested.items()}


@pytest.fixture(scope="module", params=sorted(PROFILES))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = reported_releases(tmp_path_factory.mktemp("releases"), untested_releases(request.param))
    env = {"APP_WORKERS": "2", "PYTHONPATH": str(folder)}
    with running_server(request.param, env) as running:
        yield running


def test_untested_releases_still_serve_http_and_websockets(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"message": "Hello, ASGI with FastAPI!"}
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as websocket:
        websocket.send("still here")
        assert websocket.recv(timeout=5) == "still here"


def test_one_warning_line_per_capability_not_guaranteed(server: ServerProcess) -> None:
    patches = load_profile(server.profile).carried
    log = server.log()
    for patch in patches:
        lines = [line for line in log.splitlines() if patch.capability in line and "not guaranteed" in line]
        assert len(lines) == 1, f"{patch.capability!r}:\n{log}"
        reported = untested_releases(server.profile)[patch.distribution]
        assert f"{patch.distribution} {reported} " in lines[0]  # the release the server saw
    warnings = [line for line in log.splitlines() if "is not guaranteed" in line]
    assert len(warnings) == len(patches), log
