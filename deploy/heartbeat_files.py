"""Hung-worker detection for a server that has none of its own (granian).

Each worker's event loop writes the CLOCK_MONOTONIC time (the same clock in every
process of the machine) to its own file, `<directory>/<pid>`, every
`HEARTBEAT_SECONDS`; a thread of the main process reads them and SIGKILLs a worker
whose time is older than the timeout. The server then replaces the dead worker as
it replaces any crashed one. A worker is watched from its first beat on: from the
first ASGI call it receives, the lifespan startup.

A blocked loop (a synchronous call in an `async def`, a deadlock) stops the beats;
so does SIGSTOP, which also stops any watchdog thread inside the worker itself:
hence the watcher lives in the parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from deploy.lifecycle import parent_of
from deploy.worker_timing import HEARTBEAT_SECONDS

_STAMP = struct.Struct("d")

logger = logging.getLogger("deploy.heartbeat")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BeatingApp:
    """The ASGI app, plus a task in the worker's loop that beats into `directory/<pid>`."""

    def __init__(self, app: ASGIApp, directory: Path) -> None:
        self.app = app
        self.directory = directory
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._beat())
        await self.app(scope, receive, send)

    async def _beat(self) -> None:
        fd = os.open(self.directory / str(os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                os.pwrite(fd, _STAMP.pack(time.monotonic()), 0)
                await asyncio.sleep(HEARTBEAT_SECONDS)
        finally:
            os.close(fd)


class HeartbeatWatch:
    """The main process's side: SIGKILL a child whose last beat is older than `timeout` seconds."""

    def __init__(self, directory: Path, timeout: float) -> None:
        self.directory = directory
        self.timeout = timeout
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="heartbeat-watch", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        for path in self.directory.iterdir():
            if not path.name.isdigit():
                continue
            pid = int(path.name)
            if parent_of(pid) != os.getpid():  # exited (or a stale file): forget it
                path.unlink(missing_ok=True)
                continue
            try:
                (beat,) = _STAMP.unpack(path.read_bytes()[: _STAMP.size])
            except (OSError, struct.error):
                continue  # just created, not written yet
            if now - beat > self.timeout:
                logger.error(
                    "worker %s: event loop silent for %.1f s (APP_WORKER_TIMEOUT=%s); killing it",
                    pid,
                    now - beat,
                    self.timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                path.unlink(missing_ok=True)
