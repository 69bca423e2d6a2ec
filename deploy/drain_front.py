"""The drain front: the launcher waits before the server for the drain window.

The app side of the drain is service/drain_flag.py.

With a window of N > 0 seconds the launcher forks the server and stays in front
of it as PID 1. On SIGTERM it creates the drain file (every worker then answers
/readyz with 503 and `Connection: close`, still serving), waits N seconds, then
passes SIGTERM on for the server's normal graceful stop. A second SIGTERM passes
on at once. Every other signal (SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2, SIGTTIN/TTOU)
is passed on unchanged. The server runs in its own process group so a terminal's
Ctrl-C reaches it once, through the launcher, not twice.

With a window of 0 (the default in Kubernetes, where the preStop sleep does this
job) none of this exists: the server is the launched process itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from deploy import temporary
from deploy.lifecycle import die_with_parent
from service.settings import env_name

logger = logging.getLogger("deploy.drain_front")

FORWARDED = (
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTTIN,
    signal.SIGTTOU,
)


def run_with_drain(serve: Callable[[], int], seconds: int, flag: Path) -> int:
    flag.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    launcher = os.getpid()
    # The server leaves by os._exit, which skips the interpreter's exit handlers: the temporary
    # files it makes (multiprocessing's forkserver socket, under the supervisor) would stay. It
    # makes them in a directory of its own, which this process removes once the server is gone.
    # A short name: the forkserver's socket path inside it must fit in 107 bytes (AF_UNIX).
    scratch = temporary.make("asgi-server-", "the server's own temporary files")
    pid = os.fork()
    if pid == 0:  # the server
        os.setpgid(0, 0)
        die_with_parent(launcher)
        tempfile.tempdir = str(scratch)
        code = 1
        try:
            code = serve()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    try:
        return _front(pid, seconds, flag)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _front(pid: int, seconds: int, flag: Path) -> int:
    draining = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal draining
        if draining:
            logger.info("Asked again: the graceful stop begins now.")
            forward(signum, frame)  # asked twice: stop now
            return
        draining = True
        flag.touch()
        # Said at once: outside Kubernetes a quiet pause looks like a hung process.
        logger.info(
            "Stop asked: draining for %d s (%s) while /readyz answers 503 and requests are still "
            "served, then the graceful stop. Send the signal again to stop now.",
            seconds,
            env_name("drain_seconds"),
        )
        signal.setitimer(signal.ITIMER_REAL, float(seconds))

    def on_alarm(_signum: int, frame: FrameType | None) -> None:
        forward(signal.SIGTERM, frame)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    _, status = os.waitpid(pid, 0)  # retried across signal handlers (PEP 475)
    signal.setitimer(signal.ITIMER_REAL, 0)
    flag.unlink(missing_ok=True)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it
