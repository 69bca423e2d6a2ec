"""APP_MAX_WORKER_MEMORY's one rule, wherever workers are recycled by memory (deploy/supervisor.py
for uvicorn and hypercorn, deploy/granian_internals.py in granian's main process, and each gunicorn
worker for itself, deploy/gunicorn_hooks.py).

A worker retired for memory serves on until its replacement serves (no gap), and keeps
growing meanwhile: retired only once past the limit, it would pass it by that boot's growth.
So the replacement starts early enough instead: when the worker's resident memory plus its
growth rate times `lead` (the time a replacement takes to serve, measured here on recent
boots, plus one check) reaches the limit. A worker that jumps past the limit between two
checks is retired at the next one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from deploy.lifecycle import resident_bytes

MIB = 1024 * 1024
FIRST_BOOT_GUESS_SECONDS = 1.0  # until a replacement has been seen serving


class MemoryTrend:
    """A worker's resident memory over the last checks: where it will be in `seconds`.

    The growth rate is that of the last check, or half the one before when that was faster:
    a leak that pauses for one check is still taken as growing.
    """

    def __init__(self) -> None:
        self.last: tuple[float, int] | None = None
        self.bytes_per_second = 0.0

    def add(self, at: float, size: int) -> None:
        if self.last is not None and at > self.last[0]:
            rate = max(0.0, (size - self.last[1]) / (at - self.last[0]))
            self.bytes_per_second = max(rate, self.bytes_per_second / 2)
        self.last = (at, size)

    def projected(self, seconds: float) -> int:
        return 0 if self.last is None else self.last[1] + int(self.bytes_per_second * seconds)

    def reaches(self, limit_bytes: int, seconds: float) -> bool:
        return self.last is not None and self.projected(seconds) >= limit_bytes

    def describe(self, limit_bytes: int, seconds: float) -> str:
        size = 0 if self.last is None else self.last[1]
        return (
            f"uses {size // MIB} MiB, growing {self.bytes_per_second / MIB:.1f} MiB/s: at"
            f" APP_MAX_WORKER_MEMORY={limit_bytes // MIB} MiB within {seconds:.1f} s"
        )


class MemoryWatch:
    """Every serving worker's MemoryTrend, by pid: which of them to retire now."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.trends: dict[int, MemoryTrend] = {}

    def to_retire(self, pids: Iterable[int], lead: float) -> list[tuple[int, str]]:
        """Sample each of `pids` (the workers still serving; the others are forgotten) and return
        those that would reach the limit within `lead` seconds, each with why, for the log."""
        now = time.monotonic()
        serving = set(pids)
        self.trends = {pid: trend for pid, trend in self.trends.items() if pid in serving}
        found = []
        for pid in serving:
            size = resident_bytes(pid)
            if size is None:  # gone
                continue
            trend = self.trends.setdefault(pid, MemoryTrend())
            trend.add(now, size)
            if trend.reaches(self.limit_bytes, lead):
                found.append((pid, trend.describe(self.limit_bytes, lead)))
        return found


class BootTimes:
    """How long a new worker takes to serve here. A slower boot counts at once (the machine got
    busier); faster ones bring the estimate down by halves."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def learn(self, seconds: float) -> None:
        previous = self.seconds
        self.seconds = seconds if previous is None else max(seconds, (previous + seconds) / 2)

    def estimate(self) -> float:
        return FIRST_BOOT_GUESS_SECONDS if self.seconds is None else self.seconds
