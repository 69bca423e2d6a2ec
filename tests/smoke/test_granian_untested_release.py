"""granian on a release its carried patches were not tested on (the venv reports 2.99.0, the code
is the installed one): it starts and serves, with one warning line per patch."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from websockets.sync.client import connect

from deploy.granian_internals import PATCHES
from devkit.process import REPO_ROOT, running_server
from devkit.releases import reported_releases

UNTESTED = "2.99.0"


def test_granian_outside_the_tested_range_serves_and_warns_once_per_patch(tmp_path: Path) -> None:
    folder = reported_releases(tmp_path / "releases", {"granian": UNTESTED})
    env = {"PYTHONPATH": os.pathsep.join([str(folder), str(REPO_ROOT)]), "APP_WORKERS": "2"}
    with running_server("granian", env) as server:
        assert httpx.get(server.base_url + "/", timeout=5).status_code == 200
        with connect(server.base_url.replace("http", "ws", 1) + "/ws") as ws:
            ws.send("still echoed")
            assert ws.recv(timeout=5) == "still echoed"
        log = server.log()
    warnings = [line for line in log.splitlines() if f"granian {UNTESTED} is outside the releases" in line]
    assert len(warnings) == len(PATCHES), log
    for patch in PATCHES:
        assert sum(patch.capability in line for line in warnings) == 1, patch.capability
