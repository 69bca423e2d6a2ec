"""What every profile's main process and workers share about signals and their parent.

Operator signals: a signal whose default action ends the process (SIGUSR1, SIGTTIN,
SIGTTOU stop or kill it) must never take the service down by accident. Every main
process handles them: gunicorn's arbiter natively (reopen logs, one worker more or
fewer), our supervisor scales on SIGTTIN/SIGTTOU, and wherever a server cannot do
what the signal asks, `ignore_operator_signals` logs one line saying so.

Parent death: a worker, or the server behind the drain launcher, asks the kernel for
SIGKILL when its parent dies (PR_SET_PDEATHSIG, Linux). A SIGKILLed launcher or
supervisor then takes its workers with it and nothing keeps the port. Our supervisor's
workers are children of a fork server, not of the supervisor: they watch the supervisor
itself (`die_with`). SIGKILL, not a graceful signal: the process that would bound a
graceful stop is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import signal
import sys
import threading
import time
from types import FrameType

OPERATOR_SIGNALS = (signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU)
_PR_SET_PDEATHSIG = 1

logger = logging.getLogger("deploy.lifecycle")


def ignore_operator_signals(server: str, *, can_scale: bool = False) -> None:
    """SIGUSR1 (and SIGTTIN/SIGTTOU unless the caller scales) log one line and change nothing."""

    def explain(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGUSR1:
            logger.warning("%s: %s logs to stdout, there is no log file to reopen", name, server)
        else:
            logger.warning(
                "%s: %s cannot change its worker count while running; set APP_WORKERS and restart",
                name,
                server,
            )

    for signum in OPERATOR_SIGNALS:
        if can_scale and signum != signal.SIGUSR1:
            continue
        signal.signal(signum, explain)


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when `parent_pid`, its parent, exits (now, if it already has)."""
    if sys.platform != "linux":  # pragma: no cover - the image and CI are Linux
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning(
            "PR_SET_PDEATHSIG failed (errno %s): this process may outlive its parent", ctypes.get_errno()
        )
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def die_with(pid: int) -> None:
    """SIGKILL this process when `pid`, not necessarily its parent, exits (now, if it already has).

    For a worker started by a fork server: its parent is the fork server, which lives on as long
    as any worker does; what a worker must not outlive is the supervisor. A daemon thread waits
    on a pidfd of `pid` (Linux 5.3+), which turns readable when it exits; without pidfds it
    looks every half second.
    """
    try:
        watched: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except OSError:  # pragma: no cover - kernels older than 5.3
        watched = None

    def watch() -> None:
        if watched is not None:
            select.select([watched], [], [])
        else:  # pragma: no cover
            while _exists(pid):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=f"die-with-{pid}", daemon=True).start()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_of(pid: int) -> int | None:
    """The parent of `pid` (Linux /proc), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rpartition(b")")[2].split()[1])  # after the command: state, ppid
    except (OSError, ValueError, IndexError):
        return None


def resident_bytes(pid: int) -> int | None:
    """Resident memory of `pid` in bytes (Linux /proc), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def is_stopped(pid: int) -> bool:
    """True while `pid` is stopped (SIGSTOP, a debugger): it acts on no other signal but SIGKILL."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False
