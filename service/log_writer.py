"""Whole log lines to a file descriptor, batched per event-loop iteration, never torn or lost.

Lines are queued (`add`, or `add_later` with the function that renders one) and written once per
event-loop iteration, scheduled with `call_soon` by the first line of the iteration: under load one
write carries dozens of lines, off each request's own path. The edge layer's access lines come as
one batch at the end of the iteration (`write_lines`, from service/request_records.py), which holds
them back until then (`held_back`). Any other line (`write_now`: app and server messages) first
writes what is queued and what is held back, so the stream keeps its order.

Several worker processes share one stdout (a pipe in a container). POSIX makes a write of at most
PIPE_BUF bytes to a pipe atomic, so each write carries whole lines and at most PIPE_BUF bytes: a
line is never split by, nor mixed with, another process's. The access line keeps itself under
PIPE_BUF (service/access_log.py); a longer app line (a traceback) gets one write of
its own, which Linux keeps whole unless the pipe is full.

Nothing queued is lost when a process ends: the app's lifespan shutdown flushes, and so does the
process's exit, however the server's worker leaves (service/exit_flush.py). A forked child drops
what its parent had queued: the parent writes those lines itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from service import exit_flush
from service.held_back import HeldBack

PIPE_BUF = select.PIPE_BUF
# Queued lines are written at once past this size, whatever the iteration: memory stays bounded.
FLUSH_BYTES = 64 * 1024
# What a line queued by `add_later` counts for towards FLUSH_BYTES, before it is rendered.
LATER_LINE_BYTES = 512
# A stdout someone made non-blocking: how long to wait for the reader before dropping a batch.
BLOCKED_WRITE_SECONDS = 5.0


class LineWriter:
    """Lines (bytes ending with a newline) to one file descriptor; see the module docstring."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        # A line, or the function that renders one and its values (`add_later`).
        self._pending: list[bytes | tuple[Callable[[Any], bytes], Any]] = []
        self._pending_bytes = 0
        self._flush_scheduled_on: asyncio.AbstractEventLoop | None = None

    def add(self, line: bytes) -> None:
        """Queue a line; it is written at the end of this event-loop iteration (at once outside a loop)."""
        self._queue(line, len(line))

    def add_later(self, render: Callable[[Any], bytes], values: Any) -> None:
        """Queue the line `render(values)` makes (whole, newline included, at most PIPE_BUF bytes); it is
        rendered and written as `add`'s lines are, in its place among them."""
        self._queue((render, values), LATER_LINE_BYTES)

    def _queue(self, item: bytes | tuple[Callable[[Any], bytes], Any], size: int) -> None:
        with self._lock:
            self._pending.append(item)
            self._pending_bytes += size
            if self._pending_bytes < FLUSH_BYTES:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                if loop is not None:
                    if self._flush_scheduled_on is not loop:
                        self._flush_scheduled_on = loop
                        exit_flush.arm_for_this_process()
                        loop.call_soon(self.flush)
                    return
            self._write_pending()

    def write_now(self, line: bytes) -> None:
        """Write what is queued and held back, then this line."""
        held_back.flush()
        with self._lock:
            self._pending.append(line)
            self._write_pending()

    def write_lines(self, lines: list[bytes]) -> None:
        """Write what is queued, then these lines (whole, newline included, each at most PIPE_BUF bytes)."""
        with self._lock:
            self._pending += lines
            self._write_pending()

    def flush(self) -> None:
        held_back.flush()
        with self._lock:
            self._flush_scheduled_on = None
            self._write_pending()

    def after_fork_in_child(self) -> None:
        # The lock may have been held by another thread of the parent at fork time.
        self._lock = threading.Lock()
        self._pending = []
        self._pending_bytes = 0
        self._flush_scheduled_on = None

    def _write_pending(self) -> None:
        """Write the queue in batches of whole lines, each at most PIPE_BUF bytes (or one longer line)."""
        lines, self._pending, self._pending_bytes = self._pending, [], 0
        batch: list[bytes] = []
        size = 0
        for item in lines:
            line = item if isinstance(item, bytes) else item[0](item[1])
            if batch and size + len(line) > PIPE_BUF:
                self._write_all(b"".join(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            self._write_all(b"".join(batch))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                _, ready, _ = select.select([], [self.fd], [], BLOCKED_WRITE_SECONDS)
                if not ready:
                    return  # nobody reads: drop the batch rather than stall the event loop for good
                continue
            except InterruptedError:
                continue
            except OSError:
                return  # stdout closed (EPIPE, EBADF): there is nowhere left to log to
            view = view[written:]


_writers: dict[int, LineWriter] = {}


# What keeps lines back to write them later in one batch (service/request_records.py): written first.
held_back = HeldBack()


def writer_for(fd: int) -> LineWriter:
    """The one writer of a file descriptor in this process, shared by every handler writing to it."""
    writer = _writers.get(fd)
    if writer is None:
        writer = _writers.setdefault(fd, LineWriter(fd))
    return writer


def flush_all() -> None:
    with contextlib.suppress(Exception):
        held_back.flush()
    for writer in list(_writers.values()):
        with contextlib.suppress(Exception):
            writer.flush()


def _after_fork_in_child() -> None:
    for writer in _writers.values():
        writer.after_fork_in_child()


exit_flush.run_at_exit(flush_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
