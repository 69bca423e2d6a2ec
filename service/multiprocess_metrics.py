"""Prometheus metrics that stay correct with several worker processes.

The launcher points prometheus-client at one directory per launch
(`PROMETHEUS_MULTIPROC_DIR`, from `APP_METRICS_DIR`), emptied at start. Every
worker writes its samples there and `/metrics` sums them over all workers, so
a scrape that lands on any one worker returns the totals of the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from pathlib import Path
from typing import Any

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

from service import exit_flush
from service.held_back import HeldBack
from service.tls import certificate_validity

LABELS = ("method", "route", "status")
# Anything else a client sends as a method is counted as OTHER: labels must stay bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUESTS = Counter("http_requests_total", "HTTP requests answered.", LABELS)
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the end of the response.",
    LABELS,
    buckets=DURATION_BUCKETS,
)
# How requests arrive: `https` or `http` (after trusted-proxy resolution) and the HTTP version
# ("1.1", "2"), in a series of their own so the request series keep their labels.
BY_PROTOCOL = Counter(
    "http_requests_by_protocol_total",
    "HTTP requests answered, by scheme and HTTP version.",
    ("scheme", "version"),
)
KNOWN_VERSIONS = frozenset({"1.0", "1.1", "2", "3"})
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
# When the certificate each worker loaded at its start (APP_TLS_CERT_FILE) expires: the earliest
# over the live workers, so an alert fires before any of them serves a lapsed certificate. Labelled
# by the file, so a worker that has not read it yet writes no 0 (which would be the minimum).
CERTIFICATE_EXPIRY = Gauge(
    "tls_certificate_expiry_timestamp_seconds",
    "When the served TLS certificate expires (Unix seconds), earliest over the live workers.",
    ("file",),
    multiprocess_mode="livemin",
)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS = 5.0

__all__ = ["BY_PROTOCOL", "CONTENT_TYPE_LATEST", "DURATION", "IN_PROGRESS", "REQUESTS", "flush", "render"]


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"  # labels must stay bounded


# Recording a request is five writes to mmap'd files (counter, histogram sum and
# bucket, in-progress up and down), each behind prometheus-client's lock and pid
# check. Under load an event loop runs dozens of requests per iteration, so they are
# added up in memory and written once per loop iteration (the edge layer's records,
# service/request_records.py, or `flush`, scheduled with call_soon by the first change of
# the iteration), and before every scrape and at
# shutdown, through prometheus-client's public methods: a counter's `inc(n)` once per
# series, the histogram's `observe()` per request, the in-progress gauge's `inc()` by
# its net change. Nothing is lost; another worker's scrape sees a request up to one
# loop iteration later, and a request that starts and ends within one iteration never
# shows as in progress there.
class RequestSeries:
    """`http_requests_total` and `http_request_duration_seconds` of one method, route and status."""

    __slots__ = ("count", "duration", "pending")

    def __init__(self, method: str, route: str, status: int) -> None:
        labels = (method, route, str(status))
        self.count = REQUESTS.labels(*labels)
        self.duration = DURATION.labels(*labels)
        self.pending: list[float] = []

    def observe(self, seconds: float) -> None:
        """`REQUESTS.labels(...).inc()` and `DURATION.labels(...).observe(seconds)`, at the next flush."""
        with lock:
            self.record(seconds)

    def record(self, seconds: float) -> None:
        """`observe`, the caller holding `lock`."""
        if not self.pending:
            _changed(self)
        self.pending.append(seconds)

    def write(self) -> None:
        self.count.inc(len(self.pending))
        for seconds in self.pending:
            self.duration.observe(seconds)
        self.pending.clear()


class BatchedCounter:
    """A counter's series whose increments are added up in memory and written at the next flush.

    For what is counted on a hot path: each request's protocol, each WebSocket message, each room
    message delivered. `inc` as the series' own, without its mmap write per call. Counted on an
    event loop's thread, it is written at the end of the loop iteration; counted elsewhere, at the
    next flush (the next iteration that counts something, a scrape, the shutdown, the exit).
    """

    __slots__ = ("count", "pending")

    def __init__(self, series: Any) -> None:
        self.count = series
        self.pending = 0

    def inc(self, amount: int = 1) -> None:
        if amount < 0:  # as the series' own `inc` refuses it, at the caller rather than at the flush
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with lock:
            self.record(amount)

    def record(self, amount: int = 1) -> None:
        """`inc`, the caller holding `lock`."""
        if not self.pending:
            _changed(self)
        self.pending += amount

    def write(self) -> None:
        self.count.inc(self.pending)
        self.pending = 0


def protocol_count(scheme: str, version: str) -> BatchedCounter:
    """The series of a request's scheme and version; anything unknown is "other" (bounded labels)."""
    return _protocol_count(
        scheme if scheme in ("http", "https") else "other", version if version in KNOWN_VERSIONS else "other"
    )


@functools.cache
def _protocol_count(scheme: str, version: str) -> BatchedCounter:
    return BatchedCounter(BY_PROTOCOL.labels(scheme, version))


class InProgress:
    """`http_requests_in_progress` of one method: this worker's count, written when it has changed."""

    __slots__ = ("changed", "gauge", "now", "written")

    def __init__(self, method: str) -> None:
        self.gauge = IN_PROGRESS.labels(method)
        self.now = 0
        self.written = 0
        self.changed = False

    def enter(self) -> None:
        with lock:
            self.record(1)

    def leave(self) -> None:
        with lock:
            self.record(-1)

    def record(self, change: int) -> None:
        """`enter` (1) or `leave` (-1), the caller holding `lock`."""
        self.now += change
        if not self.changed:
            self.changed = True
            _changed(self)

    def write(self) -> None:
        self.changed = False
        if self.now != self.written:
            self.gauge.inc(self.now - self.written)
            self.written = self.now


request_series = functools.cache(RequestSeries)
in_progress = functools.cache(InProgress)


# Held around every change of the series above and their writes: requests are recorded on the
# event loop's thread, but a scrape or a test may flush from another.
lock = threading.Lock()
_changed_since_flush: list[RequestSeries | InProgress | BatchedCounter] = []
_flush_scheduled_on: asyncio.AbstractEventLoop | None = None


# What records requests and writes them here later (service/request_records.py): flushed first,
# so nothing ended is left out.
held_back = HeldBack()


def _changed(series: RequestSeries | InProgress | BatchedCounter) -> None:
    """Note a series with something to write (under `lock`), and make sure a flush comes."""
    global _flush_scheduled_on  # noqa: PLW0603
    _changed_since_flush.append(series)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # outside any event loop nothing would flush it: the next flush() will
        return
    if _flush_scheduled_on is not loop:
        _flush_scheduled_on = loop
        loop.call_soon(flush)
        exit_flush.arm_for_this_process()


def flush() -> None:
    """Write this worker's request metrics recorded since the last flush to its metric files."""
    held_back.flush()
    write_changed()


def write_changed() -> None:
    """Write the series changed since the last write (what `flush` does once the held-back records are in)."""
    global _flush_scheduled_on  # noqa: PLW0603
    with lock:
        _flush_scheduled_on = None
        for series in _changed_since_flush:
            series.write()
        _changed_since_flush.clear()


# What is still held when the worker ends is written then (service/exit_flush.py). A write after the
# lifespan's `worker_exited` goes to the files it unlinked: a dead worker's live gauges do not come back.
exit_flush.run_at_exit(flush)


def sample_process() -> None:
    """Publish this worker's memory, CPU time and open files (Linux /proc)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        PROCESS_RSS.set(resident_pages * PAGE_SIZE)
        PROCESS_FDS.set(len(os.listdir("/proc/self/fd")))
    times = os.times()
    PROCESS_CPU.set(times.user + times.system)


def publish_certificate_expiry(cert_file: Path) -> None:
    """Read when the certificate expires, as the server loads it at the worker's start."""
    with contextlib.suppress(OSError, ValueError, IndexError):  # checked by the launcher already
        CERTIFICATE_EXPIRY.labels(str(cert_file)).set(certificate_validity(cert_file).not_after.timestamp())


async def sample_process_periodically() -> None:
    while True:
        sample_process()
        await asyncio.sleep(SAMPLE_SECONDS)


def render(metrics_dir: Path | None) -> bytes:
    """The text exposition, summed over every worker when running multiprocess."""
    flush()  # this worker's requests up to now, the scrape itself included
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
