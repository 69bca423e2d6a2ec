"""Worker health on every profile: operator signals, no orphans, hung workers, memory recycling.

Two workers per server. Signals go to the main process (the launcher: what a container runs
as PID 1). Faults are real: SIGSTOP, a synchronous sleep inside `async def` (/block), a route
that keeps memory on purpose (/leak). Figures go to stdout (-s) and resilience.json.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import httpx
import psutil
import pytest

from deploy.profiles import PROFILES
from devkit.process import LOOPBACK, ServerProcess, running_server
from tests.resilience.support import (
    TWO_WORKERS_ENV,
    WORKERS,
    Load,
    Report,
    failures,
    retried,
    summarize_errors,
    wait_for,
    wait_workers,
)

pytestmark = pytest.mark.resilience

ALL = sorted(PROFILES)
# Profiles whose server can change its worker count on SIGTTIN/SIGTTOU; the others log one line.
SCALES = {"uvicorn", "hypercorn", "gunicorn", "gunicorn-asgi"}
SIGNAL_SETTLE_BOUND = 15.0  # a new worker boots in ~1 s; generous for a busy machine
GONE_BOUND = 5.0  # after the main process is SIGKILLed, every process of the family is gone by then

WORKER_TIMEOUT = 3  # gunicorn's uvicorn worker notifies every second: leave room on a busy machine
# The hung worker is gone within the timeout plus a check interval (and on gunicorn, its SIGKILL
# one loop after the SIGABRT); its replacement then boots, which takes a loaded machine longer.
KILLED_BOUND = WORKER_TIMEOUT + 2.0
REPLACED_BOUND = 20.0

MEMORY_LIMIT_MIB = 80  # idle workers use ~50-57 MiB
LEAK_MIB = 1
LEAK_CLIENTS = 2
LEAK_PAUSE = 0.1
LEAK_SECONDS = 7.0
# A worker grows at most LEAK_CLIENTS * LEAK_MIB / LEAK_PAUSE MiB/s (every client on it). The
# bound is the issue's: the limit plus one check interval's growth, a check at least once a second.
# Every profile retires a growing worker early enough that it stops taking requests (its
# replacement serving first where it has one) before it passes the limit (deploy/memory_limit.py).
MEMORY_CHECK_SECONDS = 1.0


def _status(server: ServerProcess, path: str = "/") -> int | None:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(server.base_url + path, timeout=5).status_code
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _alive(procs: list[psutil.Process]) -> list[int]:
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
    return alive


def _expect_workers(server: ServerProcess, count: int) -> float | None:
    return wait_for(lambda: len(server.worker_pids()) == count, SIGNAL_SETTLE_BOUND, interval=0.1)


@pytest.mark.parametrize("profile", ALL)
def test_operator_signals_keep_serving_and_sigkill_leaves_no_orphan(profile: str, report: Report) -> None:
    with running_server(profile, TWO_WORKERS_ENV) as server:
        assert len(wait_workers(server, WORKERS)) == WORKERS, server.log()
        scales = profile in SCALES
        steps = [(signal.SIGUSR1, WORKERS), (signal.SIGTTIN, WORKERS + scales), (signal.SIGTTOU, WORKERS)]
        seen: dict[str, object] = {}
        for signum, expected in steps:
            server.signal(signum)
            settled = _expect_workers(server, expected)
            time.sleep(0.5)  # a signal that kills does so at once: the launcher must still be there
            seen[signum.name] = {
                "launcher_exit": server.process.poll(),
                "workers": len(server.worker_pids()),
                "get_root": _status(server),
                "settled_s": None if settled is None else round(settled, 2),
            }
            assert server.process.poll() is None, f"{signum.name} ended the server:\n{server.log()[-3000:]}"
            assert len(server.worker_pids()) == expected, seen
            assert _status(server) == 200, seen
        if not scales:
            assert "SIGTTIN: granian cannot change its worker count" in server.log()

        server.remember_family()
        family = list(server.seen.values())
        killed_at = time.monotonic()
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        gone = wait_for(lambda: not _alive(family) and _port_free(server.port), GONE_BOUND, interval=0.05)
        leftovers = _alive(family)
        # If the feature fails, the harness's stop() (on leaving the block) SIGKILLs every
        # process of `family` by PID: nothing outlives the test.
        report.add(
            f"operator_signals[{profile}]",
            **{k.lower(): v for k, v in seen.items()},
            sigkill_family_gone_s=None if gone is None else round(gone, 3),
            sigkill_family=len(family),
            sigkill_leftovers=len(leftovers),
            since_kill_s=round(time.monotonic() - killed_at, 3),
        )
    assert gone is not None, f"alive {GONE_BOUND}s after the main process was SIGKILLed: {leftovers}"


def test_sigkilled_drain_launcher_takes_the_server_and_workers_with_it(report: Report) -> None:
    """With a drain window the launcher forks the server: a chain of two parents to outlive."""
    with running_server("gunicorn", {**TWO_WORKERS_ENV, "APP_DRAIN_SECONDS": "1"}) as server:
        assert len(wait_workers(server, WORKERS)) == WORKERS, server.log()
        server.remember_family()
        family = list(server.seen.values())
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        gone = wait_for(lambda: not _alive(family) and _port_free(server.port), GONE_BOUND, interval=0.05)
        report.add(
            "sigkill_drain_launcher[gunicorn]", family=len(family), gone_s=gone, leftovers=_alive(family)
        )
    assert len(family) >= WORKERS + 2  # launcher, server, workers
    assert gone is not None


def _replaced(server: ServerProcess, before: set[int]) -> bool:
    now = server.worker_pids()
    return len(now) == WORKERS and len(now & before) == WORKERS - 1


def _memory_episode(server: ServerProcess, profile: str) -> dict[str, object]:
    """Every request keeps LEAK_MIB more: workers are replaced, none fails, none grows far past the limit."""
    first = wait_workers(server, WORKERS)
    peak: dict[int, int] = {}
    load = Load(
        server.base_url,
        clients=LEAK_CLIENTS,
        path=f"/leak?mib={LEAK_MIB}",
        max_requests=5000,
        max_seconds=LEAK_SECONDS,
        pause=LEAK_PAUSE,
        retry_stale=True,
    ).start()
    deadline = time.monotonic() + LEAK_SECONDS
    while time.monotonic() < deadline:  # sample every worker's RSS, bounded in time
        for proc in server.listening_workers():
            with contextlib.suppress(psutil.Error):
                peak[proc.pid] = max(peak.get(proc.pid, 0), proc.memory_info().rss // (1024 * 1024))
        time.sleep(0.05)
    outcomes = load.wait(timeout=10)
    served_by = {o.pid for o in outcomes if o.pid is not None} | wait_workers(server, WORKERS)
    growth = LEAK_CLIENTS * LEAK_MIB / LEAK_PAUSE
    allowed = MEMORY_LIMIT_MIB + growth * MEMORY_CHECK_SECONDS
    figures: dict[str, object] = {
        "requests": len(outcomes),
        "failed": len(failures(outcomes)),
        "errors": summarize_errors(outcomes),
        "stale_connection_retries": retried(outcomes),
        "recycled": len(served_by - first),
        "peak_rss_mib": max(peak.values(), default=0),
        "allowed_peak_mib": allowed,
    }
    assert served_by - first, f"no worker was replaced for memory: {figures}\n{server.log()[-3000:]}"
    assert not failures(outcomes), figures
    assert max(peak.values()) <= allowed, figures
    return figures


# Where every worker has its own accept queue (granian: one SO_REUSEPORT listener per worker), about
# half of the new connections land on the hung worker and wait there until it is killed: each probe
# client gets stuck on its first such connection (measured: all 10 within 0.5 s of the hang, in 45
# episodes of 45), then probes again once it is killed. So on granian the probe shows the new
# connections served before the hang and after the kill; the pinned clients show the service during it.
PROBE_CLIENTS = 10


class FreshProbe:
    """`clients` threads, each sending GET /pid on a new connection every `pause` seconds.

    New connections, not keep-alive ones: a connection stays with the worker that accepted it,
    so keep-alive clients that all landed on the hung worker would say nothing about the service;
    a new connection is accepted by whichever worker still runs. Bounded in count and time.
    """

    def __init__(
        self, base_url: str, clients: int = 3, pause: float = 0.05, max_seconds: float = 30.0
    ) -> None:
        self.url = base_url + "/pid"
        self.pause = pause
        self.deadline = time.monotonic() + max_seconds
        self.outcomes: list[tuple[float, float, str | None]] = []  # started, ended, error
        self.by_client: dict[int, list[tuple[float, float, str | None]]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self, client: int) -> None:
        mine = self.by_client.setdefault(client, [])
        for _ in range(2000):
            if self.stopped.is_set() or time.monotonic() > self.deadline:
                return
            started, error = time.monotonic(), None
            try:
                status = httpx.get(self.url, timeout=10).status_code
                error = None if status < 500 else f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            outcome = (started, time.monotonic(), error)
            mine.append(outcome)
            with self.lock:
                self.outcomes.append(outcome)
            time.sleep(self.pause)

    def stop(self) -> list[tuple[float, float, str | None]]:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=15)
        return self.outcomes


class PinnedClients:
    """Keep-alive clients, each on a connection of its own, grouped by the worker that serves it.

    A connection stays with the worker that accepted it. Clients on a healthy worker show whether
    the service goes on serving while another worker hangs, whatever share of new connections
    the hung one still accepts (granian's hung worker keeps accepting in Rust: about half).
    """

    def __init__(self, base_url: str, workers: set[int], per_worker: int = 2, attempts: int = 60) -> None:
        self.by_worker: dict[int, list[httpx.Client]] = {pid: [] for pid in workers}
        self.spare: list[httpx.Client] = []
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        for _ in range(attempts):
            if all(len(clients) >= per_worker for clients in self.by_worker.values()):
                break
            client = httpx.Client(base_url=base_url, limits=limits, timeout=10)
            pid = int(client.get("/pid").json()["pid"])
            self.by_worker.get(pid, self.spare).append(client)
        missing = [pid for pid, clients in self.by_worker.items() if len(clients) < per_worker]
        assert not missing, f"{attempts} new connections never reached worker(s) {missing}"
        self.outcomes: list[tuple[float, float, str | None]] = []  # started, ended, error
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []

    def keep_asking(self, workers: list[int], pause: float = 0.05, max_seconds: float = 30.0) -> None:
        """Each client of these workers sends GET /pid on its connection until stopped (bounded)."""
        deadline = time.monotonic() + max_seconds

        def ask(client: httpx.Client) -> None:
            for _ in range(2000):
                if self.stopped.is_set() or time.monotonic() > deadline:
                    return
                started, error = time.monotonic(), None
                try:
                    status = client.get("/pid").status_code
                    error = None if status < 500 else f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
                self.outcomes.append((started, time.monotonic(), error))
                time.sleep(pause)

        for pid in workers:
            for client in self.by_worker[pid]:
                self.threads.append(threading.Thread(target=ask, args=(client,), daemon=True))
                self.threads[-1].start()

    def close(self) -> list[tuple[float, float, str | None]]:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=15)
        for client in [*self.spare, *(c for clients in self.by_worker.values() for c in clients)]:
            client.close()
        return self.outcomes


def _fault_episode(server: ServerProcess, fault: str) -> dict[str, object]:
    """Hang one worker (`stop`: SIGSTOP; `block`: a synchronous sleep in its loop); time its replacement."""
    before = wait_workers(server, WORKERS)
    server.remember_family()
    workers = [server.seen[pid] for pid in before if pid in server.seen]
    # The longest-serving worker hangs: on granian a worker respawned seconds ago and crashing
    # again would be taken for a crash loop.
    victim = min(workers, key=lambda p: p.create_time())
    pinned = PinnedClients(server.base_url, before)
    healthy = [pid for pid in before if pid != victim.pid]
    probe = FreshProbe(server.base_url, clients=PROBE_CLIENTS)
    try:
        pinned.keep_asking(healthy)
        time.sleep(0.3)
        hung_at = time.monotonic()
        if fault == "stop":
            victim.suspend()  # SIGSTOP
        else:
            blocker = pinned.by_worker[victim.pid][0]  # a connection the victim serves

            def block() -> None:
                with contextlib.suppress(httpx.HTTPError):  # it breaks when the worker is killed
                    blocker.get("/block?seconds=60")

            threading.Thread(target=block, daemon=True).start()
        killed = wait_for(lambda: len(_alive(workers)) < len(before), KILLED_BOUND + 5, interval=0.05)
        killed_at = time.monotonic()
        replaced = wait_for(lambda: _replaced(server, before), REPLACED_BOUND, interval=0.05)
        time.sleep(0.3)
    finally:
        outcomes = probe.stop()
        on_healthy = pinned.close()
    answered_while_hung = [o for o in on_healthy if o[2] is None and hung_at < o[0] and o[1] < killed_at]
    healthy_failed = [o for o in on_healthy if o[2] is not None]
    failed = [o for o in outcomes if o[2] is not None]
    figures: dict[str, object] = {
        "victim": "the longest-serving worker",
        "killed_s": None if killed is None else round(killed, 3),
        "replaced_after_kill_s": None if replaced is None else round(replaced, 3),
        "answered_while_hung": len(answered_while_hung),
        "healthy_worker_failed": len(healthy_failed),
        "new_connections": len(outcomes),
        "new_connections_failed": len(failed),
        "errors": sorted({o[2] for o in [*failed, *healthy_failed] if o[2]}),
        "launcher_exit": server.process.poll(),
    }
    assert server.process.poll() is None, f"{fault}: the server stopped\n{server.log()[-3000:]}"
    assert killed is not None, f"{fault}: {figures}\n{server.log()[-3000:]}"
    assert killed <= KILLED_BOUND, f"{fault}: {figures}\n{server.log()[-3000:]}"
    assert replaced is not None, f"{fault}: {figures}\n{server.log()[-3000:]}"
    # The healthy worker served throughout: every request on its connections was answered.
    assert answered_while_hung, f"{fault}: nothing answered while a worker hung: {figures}"
    assert not healthy_failed, figures
    # New connections: only those the hung worker took may fail, at most one per probe client,
    # which waits on it until the worker is killed. A client failing twice shows its requests
    # (seconds after the hang began, after the kill was seen; error).
    for client, tried in probe.by_client.items():
        if sum(1 for o in tried if o[2] is not None) > 1:
            trace = [(round(o[0] - hung_at, 3), round(o[1] - killed_at, 3), o[2]) for o in tried]
            raise AssertionError(
                f"{fault}: probe client {client} failed more than once: {figures}\n{trace}\n"
                + server.log()[-3000:]
            )
    return figures


@pytest.mark.parametrize("profile", ALL)
def test_hung_workers_are_replaced(profile: str, report: Report) -> None:
    # No memory limit here: on a busy machine a worker growing while it takes new connections is
    # projected past a limit this tight, and one retired for memory mid-episode stopped with the
    # connections it had just accepted (granian cuts them at any worker stop): a failure the hang
    # did not cause (CI, once: 11 failed new connections from 10 clients).
    env = {**TWO_WORKERS_ENV, "APP_WORKER_TIMEOUT": str(WORKER_TIMEOUT)}
    with running_server(profile, env) as server:
        # The blocked worker first, then the longest-serving one is stopped: on granian, a worker
        # respawned seconds ago and dying again would be taken for a crash loop.
        blocked = _fault_episode(server, "block")
        report.add(f"hung_worker_blocked_loop[{profile}]", **blocked)
        stopped = _fault_episode(server, "stop")
        report.add(f"hung_worker_sigstop[{profile}]", **stopped)
        assert _status(server) == 200


@pytest.mark.parametrize("profile", ALL)
def test_leaking_workers_are_replaced(profile: str, report: Report) -> None:
    env = {**TWO_WORKERS_ENV, "APP_MAX_WORKER_MEMORY": str(MEMORY_LIMIT_MIB)}
    with running_server(profile, env) as server:
        memory = _memory_episode(server, profile)
        report.add(f"memory_recycling[{profile}]", **memory)
        assert _status(server) == 200
