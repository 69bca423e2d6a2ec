"""`APP_RELOAD` / `make dev`: a saved edit is served within seconds; a broken one does not end the loop."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from deploy.profiles import PROFILES
from devkit.process import (
    REPO_ROOT,
    ServerProcess,
    launched,
    refused_at_startup,
)

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

ROOT_ROUTE = Path("service/api/root.py")
SEED = "Hello, ASGI with FastAPI!"
RELOAD_WAIT_SECONDS = 30.0  # a restart is a process start: seconds on a loaded CI machine


def message(base_url: str) -> str | None:
    try:
        return str(httpx.get(f"{base_url}/", timeout=2).json()["message"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None  # between two server processes


def wait_for_message(server: ServerProcess, expected: str) -> None:
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    while time.monotonic() < deadline:
        if message(server.base_url) == expected:
            return
        time.sleep(0.1)
    raise server.not_ready(f"never answered {expected!r}")


# The reloader is the same for every profile (it restarts `python -m deploy <profile>`), and each
# server must stop and start cleanly under it.
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_saved_edit_is_served_and_a_broken_one_keeps_the_last_good_code(profile: str, tmp_path: Path) -> None:
    copy = tmp_path / "project"
    for package in ("service", "deploy"):
        shutil.copytree(REPO_ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    route = copy / ROOT_ROUTE
    original = route.read_text()
    assert SEED in original
    env = {"APP_RELOAD": "true", "APP_WORKERS": "1"}
    with launched(ServerProcess, profile, env, cwd=copy) as server:
        server.wait_ready(timeout=60)
        assert message(server.base_url) == SEED

        route.write_text(original.replace(SEED, "Edited once"))
        wait_for_message(server, "Edited once")

        route.write_text(original.replace(SEED, "Broken") + "\ndef broken(:\n")
        deadline = time.monotonic() + RELOAD_WAIT_SECONDS
        while "syntax error" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert message(server.base_url) == "Edited once"  # the last good code still serves

        # An error raised at import (not a syntax error) keeps the last good code serving too.
        route.write_text(original.replace(SEED, "Broken") + "\nundefined_name\n")
        deadline = time.monotonic() + RELOAD_WAIT_SECONDS
        while "does not import" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert message(server.base_url) == "Edited once"

        route.write_text(original.replace(SEED, "Edited twice"))
        wait_for_message(server, "Edited twice")
        server.remember_family()
        errors = [line for line in server.log().splitlines() if "syntax error" in line]
        assert len(errors) == 1, server.log()
        assert f"{ROOT_ROUTE.name}:" in errors[0]
        broken = [line for line in server.log().splitlines() if "does not import" in line]
        assert len(broken) == 1, server.log()
        assert f"{ROOT_ROUTE.name}:" in broken[0]
        assert "NameError: name 'undefined_name' is not defined" in broken[0]
        assert "Traceback" not in server.log()
        assert server.stop(timeout=30) == 0


def test_reload_is_refused_in_production() -> None:
    line = refused_at_startup("uvicorn", {"APP_ENV": "production", "APP_RELOAD": "true"})
    assert "APP_RELOAD" in line
