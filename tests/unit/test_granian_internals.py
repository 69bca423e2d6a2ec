"""deploy/granian_internals.py: each carried patch's guarantee inside its tested range, granian's own
behaviour outside it (the installed release is made to read 2.99.0).

granian's own code runs here: its server object and its main loop's crash-loop decision
(`_serve_loop`); worker processes are stand-ins holding what granian reads of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import granian._signals
import pytest
from granian.server import MPServer

import deploy.carried
import deploy.granian_internals as internals
from deploy import worker_gc
from deploy.granian import GRANIAN_RESPAWN_SECONDS, RESPAWN_BOUND_SECONDS, launch_config
from deploy.granian_internals import (
    PATCHES,
    CloseWhileReading,
    RecyclingServer,
    granian_server,
    ready_mark,
    worker_app,
)
from deploy.profiles import load_profile
from service.drain_flag import DrainState
from service.session_metrics import WEBSOCKET
from service.sessions import RealtimeState
from service.settings import Settings

UNTESTED = "2.99.0"


@pytest.fixture
def untested_granian(monkeypatch: pytest.MonkeyPatch) -> None:
    """importlib.metadata reports a granian release no patch was tested on; its code is the installed one."""
    installed = deploy.carried.installed_version
    monkeypatch.setattr(
        deploy.carried, "installed_version", lambda name: UNTESTED if name == "granian" else installed(name)
    )


@pytest.fixture
def granian_signals(monkeypatch: pytest.MonkeyPatch) -> Any:
    """granian's own `set_loop_signals`, put back after the test whatever the test wrapped it with."""
    original = granian._signals.set_loop_signals
    monkeypatch.setattr(granian._signals, "set_loop_signals", original)
    return original


def server(marks: Path, **options: Any) -> MPServer:
    return granian_server(
        marks, None, target="tests.support.apps:app", respawn_failed_workers=True, **options
    )


@dataclass
class Worker:
    """What granian's main process reads of a WorkerProcess: its index, pid, and Process (`inner`)."""

    idx: int
    pid: int
    exitcode: int | None = None  # None while alive
    ready_after: float | None = None  # seconds from start() to its ready mark, if it ever gets one
    marks: Path | None = None
    events: list[tuple[str, float]] = field(default_factory=list)

    @property
    def inner(self) -> Worker:
        return self

    def _id(self) -> int:
        return self.pid

    def start(self) -> None:
        if self.ready_after is not None and self.marks is not None:
            mark = ready_mark(self.marks, self.pid)
            threading.Timer(self.ready_after, mark.touch).start()

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        self.events.append(("terminated", time.monotonic()))
        self.exitcode = -signal.SIGTERM

    def kill(self) -> None:
        self.exitcode = -signal.SIGKILL

    def join(self, timeout: float | None = None) -> None:
        pass


def serve_loop_on(granian: MPServer, dead: Worker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """granian's own main loop, told one worker died: the indexes it respawned ([] = it stopped)."""
    respawned: list[int] = []

    def respawn(workers: list[int], *_: Any, **__: Any) -> None:
        respawned.extend(workers)
        granian.interrupt_signal = True  # the loop ends at its next turn
        granian.main_loop_interrupt.set()

    monkeypatch.setattr(granian, "_respawn_workers", respawn)
    granian.wrks = [dead]
    granian.interrupt_children.append(dead.idx)
    granian.main_loop_interrupt.set()
    granian._serve_loop(None, None)
    return respawned


# --- declarations --------------------------------------------------------------------------


def test_the_granian_profile_carries_every_patch_and_the_lock_is_inside_their_range() -> None:
    assert load_profile("granian").carried == PATCHES
    assert all(patch.applies() for patch in PATCHES)  # the locked release (2.8.7) is tested
    assert {patch.module for patch in PATCHES} == {"deploy/granian_internals.py"}
    assert all(patch.upstream for patch in PATCHES)


@pytest.mark.usefixtures("untested_granian")
def test_outside_the_range_one_warning_per_patch_and_no_setting_refused() -> None:
    lines = deploy.carried.warn_outside_tested(PATCHES)
    assert len(lines) == len(PATCHES)
    assert all(line.startswith(f"granian {UNTESTED} is outside the releases") for line in lines)
    # Memory recycling is granian's own option too (workers_max_rss): honoured, not refused.
    settings = Settings(server="granian", max_worker_memory=300, workers=2)
    assert load_profile("granian").refusals(settings) == []
    assert launch_config(settings).server["workers_max_rss"] == 300


# --- CRASHES_REPLACED ---------------------------------------------------------------------


def test_a_worker_killed_again_right_after_its_respawn_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granian = server(tmp_path)
    granian.respawned_wrks[0] = time.monotonic()  # respawned a moment ago (granian records it)
    dead = Worker(idx=0, pid=4242, exitcode=-signal.SIGKILL)
    ready_mark(tmp_path, dead.pid).touch()  # it had served
    assert serve_loop_on(granian, dead, monkeypatch) == [0]


def test_a_worker_killed_while_it_boots_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    granian = server(tmp_path)
    granian.respawned_wrks[0] = time.monotonic()
    assert serve_loop_on(granian, Worker(idx=0, pid=4242, exitcode=-signal.SIGKILL), monkeypatch) == [0]


def test_a_worker_crashing_with_an_error_once_it_served_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granian = server(tmp_path)
    granian.respawned_wrks[0] = time.monotonic()
    dead = Worker(idx=0, pid=4242, exitcode=1)
    ready_mark(tmp_path, dead.pid).touch()
    assert serve_loop_on(granian, dead, monkeypatch) == [0]


def test_a_worker_failing_before_it_serves_stops_the_server_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granian = server(tmp_path)  # no respawn recorded: its first boot
    assert serve_loop_on(granian, Worker(idx=0, pid=4242, exitcode=1), monkeypatch) == []


@pytest.mark.usefixtures("untested_granian")
def test_outside_the_range_granians_crash_loop_rule_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granian = server(tmp_path)
    assert type(granian) is MPServer
    granian.respawned_wrks[0] = time.monotonic()
    dead = Worker(idx=0, pid=4242, exitcode=-signal.SIGKILL)
    ready_mark(tmp_path, dead.pid).touch()
    assert serve_loop_on(granian, dead, monkeypatch) == []  # "Worker crash loop detected, exiting"


# --- REPLACEMENT_SERVES_FIRST ---------------------------------------------------------------


def test_a_replaced_worker_stops_once_its_replacement_serves_not_after_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granian = server(tmp_path)
    assert isinstance(granian, RecyclingServer)
    old = Worker(idx=0, pid=1001)
    new = Worker(idx=0, pid=1002, ready_after=0.3, marks=tmp_path)
    granian.wrks = [old]
    monkeypatch.setattr(granian, "_spawn_worker", lambda **_: new)
    started = time.monotonic()
    granian._respawn_workers([0], None, None, delay=RESPAWN_BOUND_SECONDS)
    [(_, stopped_at)] = old.events
    assert 0.3 <= stopped_at - started < 0.3 + 2.0  # after the replacement's ready mark, far before the bound
    assert granian.wrks == [new]
    assert not ready_mark(tmp_path, old.pid).exists()
    assert (granian.boot_times.seconds or 0) >= 0.3


def test_a_replacement_that_never_serves_lets_the_old_worker_stop_at_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granian = server(tmp_path)
    old, new = Worker(idx=0, pid=1001), Worker(idx=0, pid=1002)
    granian.wrks = [old]
    monkeypatch.setattr(granian, "_spawn_worker", lambda **_: new)
    started = time.monotonic()
    granian._respawn_workers([0], None, None, delay=0.4)
    [(_, stopped_at)] = old.events
    assert stopped_at - started >= 0.4


@pytest.mark.usefixtures("untested_granian")
def test_outside_the_range_granian_replaces_after_its_own_respawn_interval(tmp_path: Path) -> None:
    assert type(server(tmp_path)) is MPServer
    assert launch_config(Settings(server="granian")).server["respawn_interval"] == GRANIAN_RESPAWN_SECONDS


# --- MEMORY_LEAD --------------------------------------------------------------------------


def test_a_serving_worker_about_to_pass_the_limit_is_replaced_with_the_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granian = server(tmp_path, workers_max_rss=1, respawn_interval=RESPAWN_BOUND_SECONDS)
    asked: list[tuple[list[int], float]] = []
    monkeypatch.setattr(
        granian, "_respawn_workers", lambda workers, *_, delay=0: asked.append((list(workers), delay))
    )
    granian.wrks = [Worker(idx=0, pid=os.getpid())]  # this process: well over 1 MiB
    granian._handle_rss_signal(None, None)
    assert asked == []  # not serving yet: booting
    ready_mark(tmp_path, os.getpid()).touch()
    granian._handle_rss_signal(None, None)
    assert asked == [([0], RESPAWN_BOUND_SECONDS)]


@pytest.mark.usefixtures("untested_granian")
def test_outside_the_range_granians_own_memory_check_runs(tmp_path: Path) -> None:
    granian = server(tmp_path, workers_max_rss=300)
    assert type(granian)._handle_rss_signal is MPServer._handle_rss_signal
    assert granian.workers_rss == 300 * 1024 * 1024


# --- CLOSE_WHILE_READING -------------------------------------------------------------------


class Session:
    """A WebSocket session as granian 2.8 serves it: `receive` is a future the peer's next frame
    resolves, and `websocket.close` waits while a read is pending (src/asgi/io.rs)."""

    def __init__(self) -> None:
        self.pending: asyncio.Future[dict[str, Any]] | None = None
        self.closed = False
        self.sent: list[dict[str, Any]] = []

    def receive(self) -> asyncio.Future[dict[str, Any]]:
        self.pending = asyncio.get_running_loop().create_future()
        if self.closed:
            self.pending.set_result({"type": "websocket.disconnect", "code": 1012})
        return self.pending

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.close":
            if self.pending is not None:
                await asyncio.wait([self.pending])  # the read half: free once the read is done
            self.closed = True
        self.sent.append(message)


async def app_closing_from_another_task(scope: Any, receive: Any, send: Any) -> None:
    """Reads in one task; the stop's close (1012) comes from another, as service/sessions.py does."""
    reading = asyncio.ensure_future(receive())
    await asyncio.sleep(0.05)
    await send({"type": "websocket.close", "code": 1012})
    assert (await reading)["type"] == "websocket.disconnect"


def close_while_reading(app: Any) -> tuple[bool, Session]:
    session = Session()

    async def run() -> None:
        await app({"type": "websocket"}, session.receive, session.send)

    try:
        asyncio.run(asyncio.wait_for(run(), timeout=1.0))
    except TimeoutError:
        return False, session
    return True, session


def test_a_close_from_another_task_goes_out_while_a_read_is_pending(tmp_path: Path) -> None:
    app = worker_app(app_closing_from_another_task, tmp_path, beat=False)
    done, session = close_while_reading(app)
    assert done
    assert session.sent == [{"type": "websocket.close", "code": 1012}]


@pytest.mark.usefixtures("untested_granian")
def test_outside_the_range_the_close_waits_for_the_peer(tmp_path: Path) -> None:
    app = worker_app(app_closing_from_another_task, tmp_path, beat=False)
    assert not isinstance(app.app, CloseWhileReading)  # type: ignore[attr-defined]
    done, session = close_while_reading(app)
    assert not done
    assert session.sent == []


# --- STOP_AFTER_SESSIONS -------------------------------------------------------------------


def test_sigterm_begins_granians_stop_only_once_every_session_has_ended(
    granian_signals: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop_begun: list[float] = []

    class GranianStop:
        """granian's stop signal (a Rust WorkerSignal), noting when it is set."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.signal = granian_signals(loop)  # granian's own: installs its handlers

        def set(self) -> None:
            stop_begun.append(time.monotonic())
            self.signal.set()

    monkeypatch.setattr(granian._signals, "set_loop_signals", GranianStop)
    state = RealtimeState(DrainState(), max_message_bytes=1024, max_websockets=0)
    app = SimpleNamespace(state=SimpleNamespace(realtime=state))  # what create_app's app holds
    internals.hold_stop_for_sessions(app, bound=5.0)
    ended: list[float] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def end_session_soon() -> None:  # the app's 1012 close, answered a moment later
            def end() -> None:
                ended.append(time.monotonic())
                state.session_ended(WEBSOCKET, end_session_soon)

            loop.call_later(0.2, end)

        state.session_started(WEBSOCKET, end_session_soon)
        granian._signals.set_loop_signals(loop)
        os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler: ours
        await asyncio.sleep(1.0)  # the session ends after 0.2 s; granian's stop then begins

    try:
        asyncio.run(run())
    finally:
        state.detach()
    assert len(ended) == len(stop_begun) == 1
    assert stop_begun[0] >= ended[0]


def test_load_in_worker_applies_both_worker_patches_inside_the_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, granian_signals: Any
) -> None:
    monkeypatch.setattr(internals, "die_with_parent", lambda _: None)  # not the test process
    monkeypatch.setattr(worker_gc, "settle", lambda: None)  # nor its heap
    app = internals.load_in_worker(os.getppid(), tmp_path, False, 1.0, "tests.support.apps:app")
    assert isinstance(app.app, CloseWhileReading)
    assert granian._signals.set_loop_signals is not granian_signals


@pytest.mark.usefixtures("untested_granian")
def test_outside_the_range_the_worker_runs_granians_own_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, granian_signals: Any
) -> None:
    assert not any(patch.applies() for patch in PATCHES)
    monkeypatch.setattr(internals, "die_with_parent", lambda _: None)
    monkeypatch.setattr(worker_gc, "settle", lambda: None)
    app = internals.load_in_worker(os.getppid(), tmp_path, False, 1.0, "tests.support.apps:app")
    assert not isinstance(app.app, CloseWhileReading)
    assert granian._signals.set_loop_signals is granian_signals
