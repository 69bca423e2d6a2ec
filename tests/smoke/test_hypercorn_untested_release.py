"""hypercorn on a release no carried patch was tested on: it starts, serves, warns once per patch.

The venv reports hypercorn 0.99.0 (devkit/releases.py) while the real code runs, as a fork's
venv does right after `uv lock --upgrade` took a release this template never tested.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from deploy.hypercorn_internals import CARRIED
from devkit.process import running_server
from devkit.releases import reported_releases

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

UNTESTED = "0.99.0"
WAIT_SECONDS = 10.0


def records(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_hypercorn_outside_every_tested_range_serves_with_its_own_behaviour(tmp_path: Path) -> None:
    folder = reported_releases(tmp_path / "releases", {"hypercorn": UNTESTED})
    python_path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": python_path, "APP_LOG_FORMAT": "json"}  # default settings: supervised workers
    with running_server("hypercorn", env) as server:
        assert httpx.get(server.base_url + "/").status_code == 200
        with connect(
            f"ws://127.0.0.1:{server.port}/ws", additional_headers={"X-Request-ID": "untested-release-ws-1"}
        ) as ws:
            for message in ("hello", b"\x00\xff"):
                ws.send(message)
                assert ws.recv(timeout=5) == message
        deadline = time.monotonic() + WAIT_SECONDS
        while not (
            ended := [r for r in records(server.log()) if r.get("request_id") == "untested-release-ws-1"]
        ):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        log = server.log()
    warnings = [r["message"] for r in records(log) if "is outside the releases" in r.get("message", "")]
    assert len(warnings) == len(CARRIED), log  # one line per patch, from the launcher only
    for patch, line in zip(CARRIED, warnings, strict=True):
        assert f"hypercorn {UNTESTED} is outside the releases {patch.module} was tested on" in line
        assert patch.capability in line
    # The fallback, in the worker: hypercorn's own stream tells the app a client's close is 1006.
    assert ended[0]["close_code"] == 1006, ended
