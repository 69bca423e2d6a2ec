"""deploy/lifecycle.py and deploy/heartbeat_files.py with real processes and signals, no server."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from deploy.heartbeat_files import HeartbeatWatch
from deploy.lifecycle import OPERATOR_SIGNALS, ignore_operator_signals, is_stopped, resident_bytes


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in OPERATOR_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("restored_handlers")
def test_operator_signals_log_one_line_each_and_do_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    ignore_operator_signals("granian")
    with caplog.at_level(logging.WARNING, logger="deploy.lifecycle"):
        for signum in OPERATOR_SIGNALS:
            os.kill(os.getpid(), signum)  # handled between bytecodes, before the next line
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    assert "no log file to reopen" in lines[0]
    assert all("granian cannot change its worker count" in line for line in lines[1:])


@pytest.mark.usefixtures("restored_handlers")
def test_a_scaling_server_keeps_its_own_ttin_ttou() -> None:
    def mine(*_: object) -> None:
        pass

    signal.signal(signal.SIGTTIN, mine)
    ignore_operator_signals("uvicorn", can_scale=True)
    assert signal.getsignal(signal.SIGTTIN) is mine


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def test_resident_bytes_and_stopped_state(child: subprocess.Popen[bytes]) -> None:
    size = resident_bytes(os.getpid())
    assert size is not None
    assert abs(size - psutil.Process().memory_info().rss) < size // 10  # this process: a stable size
    assert resident_bytes(child.pid)
    assert not is_stopped(child.pid)
    os.kill(child.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while not is_stopped(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert is_stopped(child.pid)


def _stamp(path: Path, when: float) -> None:
    path.write_bytes(struct.pack("d", when))


def test_heartbeat_watch_kills_only_a_silent_child(tmp_path: Path, child: subprocess.Popen[bytes]) -> None:
    watch = HeartbeatWatch(tmp_path, timeout=2)
    beat = tmp_path / str(child.pid)
    now = time.monotonic()
    _stamp(beat, now - 1)
    watch.check(now)
    assert child.poll() is None
    _stamp(beat, now - 3)
    watch.check(now)
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert not beat.exists()


def test_heartbeat_watch_forgets_what_is_not_its_child(tmp_path: Path) -> None:
    stranger = tmp_path / "1"  # init: never our child, never signalled
    _stamp(stranger, 0.0)
    HeartbeatWatch(tmp_path, timeout=2).check(time.monotonic())
    assert not stranger.exists()
