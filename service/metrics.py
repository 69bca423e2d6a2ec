"""Prometheus metrics that stay correct with several worker processes.

The launcher points prometheus-client at one directory per launch
(`PROMETHEUS_MULTIPROC_DIR`, from `APP_METRICS_DIR`), emptied at start. Every
worker writes its samples there and `/metrics` sums them over all workers, so
a scrape that lands on any one worker returns the totals of the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client import generate_latest as _generate_latest

LABELS = ("method", "route", "status")
# Anything else a client sends as a method is counted as OTHER: labels must stay bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"

REQUESTS = Counter("http_requests_total", "HTTP requests answered.", LABELS)
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the end of the response.",
    LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# The route is only known once routing ran, so requests still in flight are counted by method.
IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "HTTP requests being handled now.",
    ("method",),
    multiprocess_mode="livesum",
)

# Per-worker process figures. prometheus-client's own process collector cannot work
# across worker processes, so each worker publishes its own, labelled by pid
# ("liveall": a dead worker's series disappear with it).
PROCESS_RSS = Gauge(
    "process_worker_resident_memory_bytes", "Resident memory of each worker.", multiprocess_mode="liveall"
)
PROCESS_CPU = Gauge(
    "process_worker_cpu_seconds", "User and system CPU time of each worker.", multiprocess_mode="liveall"
)
PROCESS_FDS = Gauge(
    "process_worker_open_fds", "Open file descriptors of each worker.", multiprocess_mode="liveall"
)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS = 5.0

__all__ = ["CONTENT_TYPE_LATEST", "DURATION", "IN_PROGRESS", "REQUESTS", "render"]


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


def sample_process() -> None:
    """Publish this worker's memory, CPU time and open files (Linux /proc)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        PROCESS_RSS.set(resident_pages * PAGE_SIZE)
        PROCESS_FDS.set(len(os.listdir("/proc/self/fd")))
    times = os.times()
    PROCESS_CPU.set(times.user + times.system)


async def sample_process_periodically() -> None:
    while True:
        sample_process()
        await asyncio.sleep(SAMPLE_SECONDS)


def render(metrics_dir: Path | None) -> bytes:
    """The text exposition, summed over every worker when running multiprocess."""
    if metrics_dir is None:
        return _generate_latest(REGISTRY)
    sample_process()  # at least the scraped worker is current to the second
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    return _generate_latest(registry)


def worker_exited(pid: int, metrics_dir: Path | None) -> None:
    """Drop a dead worker's live gauges (its counters stay: totals never go down)."""
    if metrics_dir is not None:
        multiprocess.mark_process_dead(pid, path=str(metrics_dir))  # type: ignore[no-untyped-call]
