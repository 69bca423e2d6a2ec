"""deploy/gunicorn_internals.py's patches, inside and outside their tested gunicorn releases.

Inside (the locked gunicorn): the request-head deadline on gunicorn's real ASGI protocol over
127.0.0.1, one connection at a time with a short deadline, and a real stopped process SIGKILLed
by the arbiter's first blow (tests/resilience/test_limits.py and test_worker_health.py check the
same through real servers). Outside (gunicorn reporting 99.0.0): gunicorn's own worker and
arbiter, one warning line per patch, APP_REQUEST_HEAD_TIMEOUT refused when set. And the public
hooks of deploy/gunicorn_hooks.py that replaced former patches: SIGINT drains, memory recycling.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config as GunicornConfig
from gunicorn.workers import gasgi

import deploy.carried
from deploy import gunicorn_asgi
from deploy.carried import warn_outside_tested
from deploy.gunicorn_hooks import watch_own_memory
from deploy.gunicorn_internals import (
    ASGI_ACCEPT_SETTLE,
    HEAD_DEADLINE,
    STOPPED_WORKER_KILL,
    ServiceArbiter,
    arbiter_class,
    head_timeout_worker,
)
from deploy.lifecycle import is_stopped, resident_bytes
from deploy.profile import UnsupportedSettingError
from deploy.profiles import load_profile
from deploy.worker_timing import ACCEPTED_SETTLE_SECONDS
from devkit.connections import DEADLINE, LATE, REQUEST, connected, read_response, seconds_until_closed
from service.settings import Settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Log:
    access_log_enabled = False

    def _ignore(self, *args: Any, **kwargs: Any) -> None:
        pass

    debug = info = warning = error = exception = access = _ignore


class _App:
    """`/slow` answers after 2 deadlines; `/background` answers, then keeps running for 2 deadlines."""

    def __init__(self) -> None:
        self.background_done = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/slow":
            await asyncio.sleep(2 * DEADLINE)
        body = path.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if path == "/background":
            await asyncio.sleep(2 * DEADLINE)
            self.background_done = True


@asynccontextmanager
async def serving(app: _App) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One client connection to gunicorn's ASGI protocol with our deadline."""
    cfg = GunicornConfig()
    cfg.set("keepalive", 30)  # longer than any test: only our deadline closes
    worker = SimpleNamespace(
        cfg=cfg,
        log=_Log(),
        asgi=app,
        loop=asyncio.get_running_loop(),
        nr_conns=0,
        nr=0,
        max_requests=sys.maxsize,
        alive=True,
        state={},
        request_head_timeout=DEADLINE,
    )
    protocol = head_timeout_worker().protocol
    async with connected(lambda: protocol(worker)) as streams:
        yield streams


@pytest.mark.anyio
async def test_silent_connection_is_closed_at_the_deadline() -> None:
    async with serving(_App()) as (reader, _):
        closed = await seconds_until_closed(reader, time.monotonic())
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_trickling_head_is_closed_at_the_deadline_whatever_arrives() -> None:
    async with serving(_App()) as (reader, writer):
        start = time.monotonic()

        async def trickle() -> None:
            for byte in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 1000:
                writer.write(bytes([byte]))
                await asyncio.sleep(DEADLINE / 10)

        trickling = asyncio.create_task(trickle())
        closed = await seconds_until_closed(reader, start)
        trickling.cancel()
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_deadline_restarts_after_each_response_on_keep_alive() -> None:
    async with serving(_App()) as (reader, writer):
        for index in range(3):  # each within the deadline, together beyond it
            await asyncio.sleep(DEADLINE * 0.6)
            path = str(index).encode()
            writer.write(REQUEST % path)
            assert await read_response(reader) == b"/" + path
        answered = time.monotonic()
        closed = await seconds_until_closed(reader, answered)
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_request_being_handled_is_never_cut() -> None:
    async with serving(_App()) as (reader, writer):
        writer.write(REQUEST % b"slow")
        assert await read_response(reader) == b"/slow"  # took 2 deadlines
        writer.write(REQUEST % b"again")  # the connection is still usable
        assert await read_response(reader) == b"/again"


@pytest.mark.anyio
async def test_pipelined_requests_are_all_answered() -> None:
    async with serving(_App()) as (reader, writer):
        # The second head is complete at once but only parsed once the slow response is out.
        writer.write(REQUEST % b"slow" + REQUEST % b"next" + b"GET /part")
        assert await read_response(reader) == b"/slow"
        assert await read_response(reader) == b"/next"
        answered = time.monotonic()
        closed = await seconds_until_closed(reader, answered)  # the partial third head is too slow
    assert DEADLINE - 0.05 <= closed < DEADLINE + LATE


@pytest.mark.anyio
async def test_application_running_past_its_response_is_not_cut() -> None:
    app = _App()
    async with serving(app) as (reader, writer):
        writer.write(REQUEST % b"background")
        assert await read_response(reader) == b"/background"
        answered = time.monotonic()
        closed = await seconds_until_closed(reader, answered)
    assert app.background_done
    # The connection turns idle (gunicorn's keep-alive sense) only once the call returns.
    assert 3 * DEADLINE - 0.05 <= closed < 3 * DEADLINE + LATE


@pytest.mark.anyio
async def test_no_deadline_without_the_setting() -> None:
    worker = SimpleNamespace(cfg=GunicornConfig(), log=_Log(), asgi=None, loop=asyncio.get_running_loop())
    protocol = head_timeout_worker().protocol(worker)
    protocol.head_deadline.arm()
    assert protocol.head_deadline.timeout is None
    assert not protocol.head_deadline.armed


def test_the_worker_serves_its_connections_with_our_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    # gunicorn 27 builds the protocol with `lambda: ASGIProtocol(self)`: the name the worker rebinds.
    assert "ASGIProtocol(self)" in inspect.getsource(gasgi.ASGIWorker._serve)
    monkeypatch.setattr(gasgi, "ASGIProtocol", gasgi.ASGIProtocol)  # restored after the test
    monkeypatch.setattr(gasgi.ASGIWorker, "run", lambda self: None)  # no event loop here
    worker_class = head_timeout_worker()
    worker_class.__new__(worker_class).run()
    assert gasgi.ASGIProtocol is worker_class.protocol


@pytest.mark.anyio
async def test_a_stopping_worker_stops_accepting_and_lets_a_handshake_finish_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gunicorn's own stop waits only for connections whose TLS handshake is done: ours closes the
    # listeners and settles before it, so one accepted an instant before is counted and served.
    events: list[tuple[str, float]] = []

    class Listener:
        def close(self) -> None:
            events.append(("listener closed", time.monotonic()))

    async def gunicorns_own_stop(self: Any) -> None:
        events.append(("gunicorn's stop", time.monotonic()))

    monkeypatch.setattr(gasgi.ASGIWorker, "_shutdown", gunicorns_own_stop)
    worker_class = head_timeout_worker()
    worker = worker_class.__new__(worker_class)
    worker.servers = [Listener()]
    await worker._shutdown()
    assert [what for what, _ in events] == ["listener closed", "gunicorn's stop"]
    assert events[1][1] - events[0][1] >= ACCEPTED_SETTLE_SECONDS


# The arbiter's stopped-worker kill, on a real stopped process.


@contextmanager
def stopped_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while not is_stopped(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert is_stopped(child.pid)
        yield child
    finally:
        child.kill()
        child.wait(timeout=5)


class _SilentSince:
    """A worker's heartbeat file, last beaten long ago."""

    def last_update(self) -> float:
        return time.monotonic() - 60

    def close(self) -> None:
        pass


def first_blow(arbiter_type: type[Any], pid: int) -> None:
    """One turn of the arbiter's heartbeat check over one worker silent past its timeout."""
    arbiter = arbiter_type.__new__(arbiter_type)
    arbiter.timeout = 1
    arbiter.log = logging.getLogger("test.arbiter")
    arbiter._stats = {"workers_killed": 0}
    arbiter.WORKERS = {pid: SimpleNamespace(aborted=False, tmp=_SilentSince())}
    arbiter.murder_workers()


def test_a_stopped_worker_is_sigkilled_at_the_first_blow() -> None:
    assert arbiter_class() is ServiceArbiter
    with stopped_child() as child:
        first_blow(ServiceArbiter, child.pid)
        assert child.wait(timeout=5) == -signal.SIGKILL


def test_gunicorns_own_first_blow_leaves_a_stopped_worker_for_the_next_turn() -> None:
    # What the fallback does: SIGABRT, left pending by a stopped process.
    with stopped_child() as child:
        first_blow(Arbiter, child.pid)
        time.sleep(0.3)
        assert child.poll() is None


# Outside the tested releases: gunicorn reports 99.0.0.


@pytest.fixture
def untested_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    real = deploy.carried.installed_version
    monkeypatch.setattr(
        deploy.carried,
        "installed_version",
        lambda distribution: "99.0.0" if distribution == "gunicorn" else real(distribution),
    )


def test_every_gunicorn_patch_is_declared_and_applies_on_the_locked_release() -> None:
    assert load_profile("gunicorn-asgi").carried == (STOPPED_WORKER_KILL, HEAD_DEADLINE, ASGI_ACCEPT_SETTLE)
    assert STOPPED_WORKER_KILL in load_profile("gunicorn").carried
    assert HEAD_DEADLINE.applies()
    assert ASGI_ACCEPT_SETTLE.applies()
    assert STOPPED_WORKER_KILL.applies()


@pytest.mark.usefixtures("untested_gunicorn")
def test_outside_the_tested_releases_gunicorn_runs_its_own_arbiter_and_worker() -> None:
    assert not HEAD_DEADLINE.applies()
    assert not STOPPED_WORKER_KILL.applies()
    assert arbiter_class() is Arbiter
    launch = load_profile("gunicorn-asgi").launch_config(Settings())
    assert launch.server["gunicorn"]["worker_class"] == "asgi"
    application = gunicorn_asgi.application(Settings())
    assert application.cfg.worker_class is gasgi.ASGIWorker


@pytest.mark.usefixtures("untested_gunicorn")
def test_outside_the_tested_releases_one_warning_line_per_patch(caplog: pytest.LogCaptureFixture) -> None:
    for profile in ("gunicorn-asgi", "gunicorn"):
        patches = [p for p in load_profile(profile).carried if p.distribution == "gunicorn"]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="deploy"):
            lines = warn_outside_tested(load_profile(profile).carried)
        for patch in patches:
            found = [r.getMessage() for r in caplog.records if patch.capability in r.getMessage()]
            assert len(found) == 1, found
            assert found[0].startswith("gunicorn 99.0.0 is outside the releases")
            assert patch.fallback in found[0]
        assert len([line for line in lines if line.startswith("gunicorn ")]) == len(patches)


@pytest.mark.usefixtures("untested_gunicorn", "isolated_env")
def test_outside_the_tested_releases_only_an_explicit_head_timeout_is_refused() -> None:
    profile = load_profile("gunicorn-asgi")
    profile.check(Settings())  # the default starts, with the warning
    with pytest.raises(UnsupportedSettingError) as refused:
        profile.check(Settings(request_head_timeout=7))
    message = str(refused.value)
    assert "APP_REQUEST_HEAD_TIMEOUT" in message
    assert "gunicorn 99.0.0" in message
    assert "\n" not in message


# The public hooks that replaced former patches (deploy/gunicorn_hooks.py).

SIGINT_PROBE = textwrap.dedent(
    """
    import os, signal, time
    from deploy.gunicorn_hooks import when_ready
    got = []
    for signum in (signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, lambda s, f: got.append(signal.Signals(s).name))  # as the arbiter's
    when_ready(None)
    for _ in range(2):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    print(" ".join(got))
    """
)


def test_sigint_asks_the_arbiter_to_drain_then_to_stop_at_once() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SIGINT_PROBE], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.split() == ["SIGTERM", "SIGQUIT"]


def _retirements(limit_bytes: int, seconds: float) -> list[str]:
    retired: list[str] = []
    stop = threading.Event()
    watch = watch_own_memory(limit_bytes, retired.append, interval=0.05, stop=stop)
    deadline = time.monotonic() + seconds
    while not retired and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # a second call would come within this
    stop.set()
    watch.join(timeout=5)
    return retired


def test_a_worker_over_its_memory_limit_retires_itself_once() -> None:
    size = resident_bytes(os.getpid())
    assert size is not None
    retired = _retirements(size // 2, seconds=2)
    assert len(retired) == 1
    assert "APP_MAX_WORKER_MEMORY" in retired[0]


def test_a_worker_well_under_its_memory_limit_keeps_serving() -> None:
    size = resident_bytes(os.getpid())
    assert size is not None
    assert _retirements(size * 4, seconds=0.5) == []


RETIRE_PROBE = textwrap.dedent(
    """
    import logging, time
    from types import SimpleNamespace
    from deploy.gunicorn_hooks import post_worker_init
    project = SimpleNamespace(max_worker_memory=1)
    worker = SimpleNamespace(app=SimpleNamespace(project=project), log=logging.getLogger(), pid=0)
    post_worker_init(worker)  # every worker is over 1 MiB
    time.sleep(10)
    """
)


def test_post_worker_init_stops_a_worker_over_the_limit_with_gunicorns_graceful_signal() -> None:
    started = time.monotonic()
    probe = subprocess.run([sys.executable, "-c", RETIRE_PROBE], capture_output=True, timeout=30, check=False)
    assert probe.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 8
