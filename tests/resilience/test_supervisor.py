"""deploy/supervisor.py with tiny real worker processes: overlap on recycling and reload, boot failures.

Workers append "<event> <pid> <monotonic time>" lines to a journal file; the supervisor
runs in its own process (it installs signal handlers) and is stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from pathlib import Path

from deploy.supervisor import READY, RETIRING, Supervisor, WorkerLink

BOOT = 0.3  # a worker's simulated import time
BOUND = 15.0
Event = tuple[str, int, float]  # what, which worker, when


def _note(journal: Path, event: str) -> None:
    with journal.open("a") as out:
        out.write(f"{event} {os.getpid()} {time.monotonic()}\n")


def _worker(link: WorkerLink, *, journal: Path, retire_first: bool, boot_exit: int) -> None:
    _note(journal, "start")
    time.sleep(BOOT)
    if boot_exit:
        raise SystemExit(boot_exit)
    _note(journal, "ready")
    link.report(READY)
    if retire_first:
        try:  # only the first worker to get here announces it reached its request limit
            os.close(os.open(journal.with_suffix(".retired"), os.O_CREAT | os.O_EXCL))
            link.report(RETIRING)
        except FileExistsError:
            pass
    while not link.stop_requested():
        time.sleep(0.02)
    _note(journal, "stopped")


def _supervise(journal: Path, workers: int, retire_first: bool, boot_exit: int) -> None:
    code = Supervisor(
        server="test",
        workers=workers,
        target=_worker,
        target_kwargs={"journal": journal, "retire_first": retire_first, "boot_exit": boot_exit},
        graceful_timeout=2,
        boot_seconds=BOUND,
        metrics_dir=None,
        close_sockets=lambda: None,
    ).run()
    raise SystemExit(code)


def _events(journal: Path) -> list[Event]:
    if not journal.exists():
        return []
    rows = [line.split() for line in journal.read_text().splitlines()]
    return [(event, int(pid), float(at)) for event, pid, at in rows]


def _wait_for(journal: Path, done: Callable[[list[Event]], bool], timeout: float = BOUND) -> list[Event]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _events(journal)
        if done(events):
            return events
        time.sleep(0.05)
    raise AssertionError(f"timed out; journal: {_events(journal)}")


@contextmanager
def _supervisor(
    journal: Path, workers: int = 1, retire_first: bool = False, boot_exit: int = 0
) -> Iterator[BaseProcess]:
    process = get_context("spawn").Process(
        target=_supervise, args=(journal, workers, retire_first, boot_exit)
    )
    process.start()
    try:
        yield process
    finally:
        if process.exitcode is None and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
        process.join(timeout=BOUND)
        if process.exitcode is None:
            process.kill()
            process.join()


def _count(events: list[Event], name: str) -> int:
    return sum(1 for event, _, _ in events if event == name)


def test_retiring_worker_stops_only_once_its_replacement_is_ready(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with _supervisor(journal, retire_first=True) as supervisor:
        events = _wait_for(journal, lambda e: _count(e, "stopped") == 1)
        os.kill(supervisor.pid or 0, signal.SIGTERM)
        supervisor.join(timeout=BOUND)
    events = _events(journal)
    starts = [pid for event, pid, _ in events if event == "start"]
    assert len(starts) == 2, events
    old, new = starts
    ready_at = {pid: at for event, pid, at in events if event == "ready"}
    stopped_at = {pid: at for event, pid, at in events if event == "stopped"}
    assert stopped_at[old] >= ready_at[new], "the old worker stopped before its replacement was ready"
    assert supervisor.exitcode == 0
    assert set(stopped_at) == {old, new}  # SIGTERM drained the replacement too


def test_sighup_replaces_every_worker_with_overlap(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with _supervisor(journal, workers=2) as supervisor:
        first = _wait_for(journal, lambda e: _count(e, "ready") == 2)
        os.kill(supervisor.pid or 0, signal.SIGHUP)
        events = _wait_for(journal, lambda e: _count(e, "stopped") == 2 and _count(e, "ready") == 4)
        old = {pid for event, pid, _ in first if event == "ready"}
        new = {pid for event, pid, _ in events if event == "ready"} - old
        first_new_ready = min(at for event, pid, at in events if event == "ready" and pid in new)
        stops = [at for event, pid, at in events if event == "stopped" and pid in old]
        assert len(new) == 2
        assert len(stops) == 2
        assert min(stops) >= first_new_ready
        assert supervisor.exitcode is None  # still serving


def test_worker_failing_to_boot_stops_the_supervisor_with_its_status(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with _supervisor(journal, workers=2, boot_exit=3) as supervisor:
        supervisor.join(timeout=BOUND)
        assert supervisor.exitcode == 3
    assert _count(_events(journal), "start") == 2  # no crash loop: nobody was respawned
