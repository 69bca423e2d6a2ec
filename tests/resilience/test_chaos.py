"""Chaos: worker SIGKILLs under load mean the same thing on every profile.

Two workers, a few keep-alive clients requesting /pid in a bounded loop, and a worker SIGKILLed
every few seconds: a random one, then the replacement of the last one moments after it is up
(what granian 2.8's own crash-loop rule stopped the whole server for), then a random one again.
Each kill may cost only the requests on the connections the killed worker held; the worker
count is back after each. Only a worker that cannot boot stops the server.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import time

import httpx
import psutil
import pytest

from deploy.profiles import PROFILES
from devkit.process import ServerProcess, launched, running_server
from tests.resilience.support import (
    TWO_WORKERS_ENV,
    WORKERS,
    Load,
    Report,
    failures,
    summarize_errors,
    wait_for,
    wait_workers,
)

pytestmark = pytest.mark.resilience

ALL = sorted(PROFILES)
CLIENTS = 4
KILLS = 3
BETWEEN_KILLS_SECONDS = 1.5  # from a replacement up to the next kill: well within granian's 5.5 s window
RESTORED_BOUND = 10.0  # a replacement serves in ~1 s; generous for a loaded machine
BOOT_FAILURE_BOUND = 20.0
CANNOT_BOOT_APP = "tests.resilience.cannot_boot:app"


def _connections_held(pid: int, port: int) -> int:
    """Established client connections a worker holds on the service's port."""
    with contextlib.suppress(psutil.Error):
        return sum(
            1
            for conn in psutil.Process(pid).net_connections(kind="tcp")
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
        )
    return 0


def _restored(server: ServerProcess, victim: int) -> set[int]:
    """The workers once the count is back without `victim` (empty if not within the bound)."""
    pids: set[int] = set()

    def back() -> bool:
        nonlocal pids
        pids = server.worker_pids() if server.process.poll() is None else set()
        return len(pids) == WORKERS and victim not in pids

    return pids if wait_for(back, RESTORED_BOUND, interval=0.05) is not None else set()


def _worker_series_pids(server: ServerProcess) -> set[int]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    return {
        int(pid) for pid in re.findall(r'^process_worker_resident_memory_bytes\{pid="(\d+)"\}', text, re.M)
    }


@pytest.mark.parametrize("profile", ALL)
def test_random_worker_sigkills_under_load_cost_only_the_killed_connections(
    profile: str, report: Report
) -> None:
    chooser = random.Random(profile)  # noqa: S311 - picks a victim, the same run to run; no secret
    held = 0
    restored_after: list[float] = []
    with running_server(profile, TWO_WORKERS_ENV) as server:
        workers = wait_workers(server, WORKERS)
        assert len(workers) == WORKERS, server.log()
        with Load(server.base_url, clients=CLIENTS, max_requests=50_000, max_seconds=20, pause=0.005) as load:
            replacement: int | None = None
            restored_at = time.monotonic()
            for kill in range(KILLS):
                time.sleep(BETWEEN_KILLS_SECONDS)
                # The second kill: the replacement of the first, moments after it is up.
                victim = replacement if kill == 1 and replacement else chooser.choice(sorted(workers))
                held += _connections_held(victim, server.port)
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                after = _restored(server, victim)
                assert after, f"kill {kill + 1} (pid {victim}): workers not back:\n{server.log()[-3000:]}"
                restored_at = time.monotonic()
                restored_after.append(round(restored_at - killed_at, 3))
                (replacement,) = after - workers
                workers = after
            time.sleep(1.0)  # the load goes on over the restored set
            outcomes = load.stop()
        alive = server.process.poll() is None
        log = server.log()
        published = _worker_series_pids(server)
    lost = failures(outcomes)
    report.add(
        f"chaos_sigkill[{profile}]",
        requests=len(outcomes),
        failed=len(lost),
        connections_held_by_killed=held,
        errors=summarize_errors(outcomes),
        restored_s=restored_after,
    )
    assert alive, f"the server stopped after worker kills:\n{log[-3000:]}"
    assert any(o.ok and o.started > restored_at for o in outcomes), "nothing answered after the last kill"
    assert len(lost) <= held, summarize_errors(outcomes)
    # Only live workers have worker series: not the killed ones, not the main process.
    assert published <= workers, (published, workers)


@pytest.mark.parametrize("profile", ALL)
def test_a_worker_that_cannot_boot_stops_the_server(profile: str) -> None:
    env = {**TWO_WORKERS_ENV, "APP_ASGI_APP": CANNOT_BOOT_APP}
    with launched(ServerProcess, profile, env) as server:
        try:
            code = server.wait_exit(BOOT_FAILURE_BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"still serving {BOOT_FAILURE_BOUND} s after its workers failed to boot:\n{server.log()}"
            )
    assert code != 0
