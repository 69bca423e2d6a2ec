"""Each profile as a real process: settings honoured, signals drain, bad settings refused."""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deploy.profiles import PROFILES
from deploy.worker_gc import YOUNG_THRESHOLD
from devkit.process import refused_at_startup, running_server

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

ALL = sorted(PROFILES)
TEST_APP = {"APP_ASGI_APP": "tests.support.apps:app"}
# A single unsupervised uvicorn process re-raises the signal it drained on (exit by
# signal, -N for Popen, 128+N in a shell); supervisors exit 0.
EXIT_ON_SIGNAL = {
    ("uvicorn", 1): {signal.SIGTERM: -signal.SIGTERM, signal.SIGINT: -signal.SIGINT},
}


def expected_exit(profile: str, workers: int, signum: int) -> int:
    return EXIT_ON_SIGNAL.get((profile, workers), {}).get(signum, 0)


@pytest.mark.parametrize("profile", ALL)
def test_invalid_setting_stops_startup_with_one_readable_line(profile: str) -> None:
    started = time.monotonic()
    line = refused_at_startup(profile, {"APP_PORT": "notaport"})
    assert time.monotonic() - started < 15
    assert "APP_PORT" in line
    assert "notaport" in line
    assert "1 to 65535" in line
    assert "Traceback" not in line


@pytest.mark.parametrize("profile", ALL)
@pytest.mark.parametrize("target", ["no_such_module:app", "service.no_such_module:app", "no_pkg.main:app"])
def test_app_module_not_found_stops_startup_with_one_readable_line(profile: str, target: str) -> None:
    line = refused_at_startup(profile, {"APP_ASGI_APP": target})
    assert "APP_ASGI_APP" in line
    assert repr(target) in line


@pytest.mark.parametrize("profile", ALL)
def test_app_workers_gives_that_many_worker_processes(profile: str) -> None:
    with running_server(profile, {"APP_WORKERS": "2"}) as server:
        deadline = time.monotonic() + 20
        while len(server.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(server.worker_pids()) == 2


@pytest.mark.parametrize("profile", ALL)
def test_root_path_is_honoured(profile: str) -> None:
    with running_server(profile, {"APP_ROOT_PATH": "/api"}) as server:
        for path in ("/api/", "/"):
            response = httpx.get(server.base_url + path)
            assert response.status_code == 200, path
            assert response.json() == {"message": "Hello, ASGI with FastAPI!"}
        openapi = httpx.get(server.base_url + "/api/openapi.json").json()
        assert openapi["servers"] == [{"url": "/api"}]


def _slow_request(base_url: str, seconds: float) -> httpx.Response:
    return httpx.get(f"{base_url}/slow", params={"seconds": seconds}, timeout=60)


@pytest.mark.parametrize(
    ("profile", "workers", "signum"),
    [(p, w, s) for p in ALL for (w, s) in ((1, signal.SIGTERM), (2, signal.SIGTERM), (1, signal.SIGINT))],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_signal_drains_in_flight_request_then_exits(
    profile: str, workers: int, signum: signal.Signals
) -> None:
    graceful = 10
    env = {**TEST_APP, "APP_WORKERS": str(workers), "APP_GRACEFUL_TIMEOUT": str(graceful)}
    if workers == 1:
        env["APP_WORKER_TIMEOUT"] = "0"  # unwatched: uvicorn and hypercorn serve in the launched process
    with running_server(profile, env) as server, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(_slow_request, server.base_url, 2.0)
        time.sleep(0.7)  # the request is now inside the handler
        signalled = time.monotonic()
        server.signal(signum)
        response = in_flight.result(timeout=30)
        code = server.wait_exit(timeout=graceful + 5)
        elapsed = time.monotonic() - signalled
        log = server.log()  # the log file goes with the server
    assert response.status_code == 200
    assert response.json() == {"slept": 2.0}
    assert code == expected_exit(profile, workers, signum), f"exit {code}\n{log}"
    assert elapsed < graceful


@pytest.mark.parametrize("profile", ALL)
def test_request_outliving_graceful_timeout_is_cut_and_exit_is_prompt(profile: str) -> None:
    graceful = 2
    env = {**TEST_APP, "APP_WORKERS": "1", "APP_GRACEFUL_TIMEOUT": str(graceful)}
    with running_server(profile, env) as server, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(_slow_request, server.base_url, 60.0)
        time.sleep(0.7)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.wait_exit(timeout=graceful + 10)
        elapsed = time.monotonic() - signalled
        outcome = in_flight.exception(timeout=30) or in_flight.result().status_code
        log = server.log()
    assert elapsed < graceful + 3.5, log
    assert code in (0, -signal.SIGTERM), f"exit {code}\n{log}"
    assert outcome != 200


@pytest.mark.parametrize("profile", ALL)
def test_stop_behind_the_drain_window_leaves_a_clean_log_and_no_files(profile: str) -> None:
    # As `make run-*` runs locally: a drain window (the launcher forks the server) and two workers.
    # Its temporary directory is short, as /tmp is (pytest's own would be too long a place for the
    # forkserver's socket path).
    temporary = Path(tempfile.mkdtemp(prefix="tmp-"))
    env = {**TEST_APP, "APP_WORKERS": "2", "APP_DRAIN_SECONDS": "1", "TMPDIR": str(temporary)}
    try:
        with running_server(profile, env) as server:
            server.signal(signal.SIGTERM)
            code = server.wait_exit(timeout=20)
            log = server.log()
        left = sorted(str(path.relative_to(temporary)) for path in temporary.rglob("*"))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    assert code == 0, log
    # The metrics directory, the drain flag's and whatever the server made (multiprocessing's
    # forkserver socket): all gone with it.
    assert left == [], log
    for noise in ("Traceback", "Warning:", "leaked"):
        assert noise not in log, log
    # The pause announces itself, or a plain `kill` looks hung for the window.
    assert log.count("Stop asked: draining for 1 s (APP_DRAIN_SECONDS)") == 1, log


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_taken_port_stops_startup_with_one_line_naming_the_address(profile: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = refused_at_startup(profile, {"APP_HOST": "127.0.0.1", "APP_PORT": str(port)})
    assert f"cannot listen on 127.0.0.1:{port}: another process listens there" in line
    assert "APP_PORT" in line


def test_an_address_not_of_this_host_stops_startup_with_one_line() -> None:
    # TEST-NET-1 (RFC 5737): never assigned to a host. Binding sends nothing anywhere.
    line = refused_at_startup("uvicorn", {"APP_HOST": "192.0.2.1", "APP_PORT": "8000"})
    assert "cannot listen on 192.0.2.1:8000: it is not an address of this host" in line


# Two supervised workers on every profile; and one worker neither watched nor recycled, which
# uvicorn and hypercorn serve in the launcher's own process: a path of its own.
IN_PROCESS = {"APP_WORKERS": "1", "APP_WORKER_TIMEOUT": "0"}
SERVING_PATHS = [
    *(pytest.param(profile, {"APP_WORKERS": "2"}, id=f"{profile}-2") for profile in ALL),
    *(pytest.param(profile, IN_PROCESS, id=f"{profile}-in-process") for profile in ("uvicorn", "hypercorn")),
]


@pytest.mark.parametrize(("profile", "settings"), SERVING_PATHS)
def test_every_worker_runs_on_uvloop_with_its_heap_settled(profile: str, settings: dict[str, str]) -> None:
    # Each profile declares uvloop; a worker that silently fell back to asyncio's loop would
    # still answer, only slower. So would a worker whose collector walks the whole app again and
    # again (deploy/worker_gc.py). New connections, so that both workers answer.
    with running_server(profile, {**TEST_APP, **settings}) as server:
        answers = []
        for _ in range(20):
            loop = httpx.get(f"{server.base_url}/loop", headers={"Connection": "close"}, timeout=5).json()
            heap = httpx.get(f"{server.base_url}/gc", headers={"Connection": "close"}, timeout=5).json()
            answers.append((loop["loop"], heap["young_threshold"], heap["frozen"] > 20_000))
        workers = server.listening_workers()
    if settings is IN_PROCESS:
        assert workers == []  # no process below the launcher serves: the launcher does
    assert set(answers) == {("uvloop.Loop", YOUNG_THRESHOLD, True)}
