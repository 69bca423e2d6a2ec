"""The benchmark matrix: profile x workers x app x workload; one server process per profile, workers, app."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil

from bench import realtime
from bench.load import WORKLOADS, LoadGenerator, LoadResult, Workload
from bench.servers import Server, ServerError, running_server

MB = 1024 * 1024
# With several workers, the connections a point opens all at once may all land on one
# worker, or a few (whichever accepts first keeps them, keep-alive): a CPU-bound point then
# measures fewer workers than it names. One whose busiest worker did UNEVEN_FACTOR times its
# fair share of the CPU work or more (75% with 2 workers) is measured again, with new
# connections, up to MAX_ATTEMPTS times in all; the discarded shares are kept.
UNEVEN_FACTOR = 1.5
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class App:
    key: str
    import_string: str
    ready_path: str


APPS: dict[str, App] = {
    "service": App("service", "bench.apps:service", "/readyz"),
    "bare": App("bare", "bench.apps:bare_fastapi", "/"),  # no /readyz: the first 200 on GET /
    "raw": App("raw", "bench.apps:raw_asgi", "/"),
}


@dataclass(frozen=True)
class Plan:
    profiles: Sequence[str]
    worker_counts: Sequence[int]
    apps: Sequence[App]
    workloads: Sequence[Workload]
    duration: float
    warmup: float
    connections: int

    @property
    def servers(self) -> int:
        return len(self.profiles) * len(self.worker_counts) * len(self.apps)

    @property
    def points(self) -> int:
        return self.servers * len(self.workloads)


@dataclass
class Point:
    profile: str
    workers: int
    app: str
    workload: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    requests: int | None = None
    duration_s: float | None = None
    busiest_worker_share: float | None = None  # of the workers' CPU time; None with one worker
    uneven_attempts: list[float] = field(default_factory=list)  # busiest shares of discarded runs
    failure: str | None = None

    def record(self, result: LoadResult) -> None:
        self.rps, self.p50_ms, self.p99_ms = result.rps, result.p50_ms, result.p99_ms
        self.errors, self.requests, self.duration_s = result.errors, result.requests, result.duration_s


@dataclass
class ServerRun:
    profile: str
    workers: int
    app: str
    ready_s: float | None = None
    worker_processes: int | None = None
    rss_per_worker_mb: float | None = None
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    exit_status: int | None = None
    failure: str | None = None

    @property
    def growth_mb(self) -> float | None:
        if self.rss_before_mb is None or self.rss_after_mb is None:
            return None
        return self.rss_after_mb - self.rss_before_mb


@dataclass
class Results:
    servers: list[ServerRun] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)


Progress = Callable[[str, bool], None]
"""Called with a description before each point (False) and once the point is done (True)."""


def run_plan(plan: Plan, generator: LoadGenerator, progress: Progress) -> Results:
    results = Results()
    for profile in plan.profiles:
        for workers in plan.worker_counts:
            for app in plan.apps:
                run = ServerRun(profile, workers, app.key)
                results.servers.append(run)
                results.points.extend(_run_server(plan, generator, progress, run, app))
    return results


def _run_server(
    plan: Plan, generator: LoadGenerator, progress: Progress, run: ServerRun, app: App
) -> list[Point]:
    """Start one server, drive every workload at it, note its start-up time and memory; stop it."""
    # The raw ASGI app has no WebSocket or event-stream route: those compare service and bare FastAPI.
    workloads = [w for w in plan.workloads if w.kind == "http" or app.key != "raw"]
    points = [Point(run.profile, run.workers, app.key, w.key) for w in workloads]
    label = f"{run.profile} x{run.workers} {app.key}"
    done = 0
    progress(f"{label}: starting", False)
    try:
        with running_server(run.profile, app.import_string, run.workers) as server:
            run.ready_s = server.wait_ready(app.ready_path)
            before = server.worker_rss()
            run.worker_processes = len(before)
            run.rss_before_mb = sum(before) / MB
            for point, workload in zip(points, workloads, strict=True):
                progress(f"{label}: {workload.label}", False)
                _measure(plan, generator, server, workload, point)
                done += 1
                progress(f"{label}: {workload.label}", True)
            after = server.worker_rss()
            run.rss_after_mb = sum(after) / MB
            run.rss_per_worker_mb = run.rss_after_mb / len(after) if after else None
            if len(after) != run.worker_processes:
                run.failure = (
                    f"worker processes changed during the run: {run.worker_processes} -> {len(after)}"
                )
        run.exit_status = server.process.returncode
    except (ServerError, psutil.Error, OSError) as error:
        run.failure = f"{type(error).__name__}: {error}"
        for point in points[done:]:
            point.failure = "server failed"
            progress(f"{label}: failed", True)
    return points


def _measure(plan: Plan, generator: LoadGenerator, server: Server, workload: Workload, point: Point) -> None:
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            drive = generator.run if workload.kind == "http" else realtime.run
            if plan.warmup > 0:
                drive(server.base_url, workload, plan.warmup, plan.connections)
            before = server.worker_cpu_seconds()
            result = drive(server.base_url, workload, plan.duration, plan.connections)
            share = busiest_share(before, server.worker_cpu_seconds())
            uneven_at = UNEVEN_FACTOR / point.workers
            if share is not None and workload.cpu_bound and share >= uneven_at and attempt < MAX_ATTEMPTS:
                point.uneven_attempts.append(round(share, 2))
                continue
            point.record(result)
            point.busiest_worker_share = None if share is None else round(share, 2)
            return
    except Exception as error:  # one failed point must not end the whole run
        point.failure = f"{type(error).__name__}: {error}"


def busiest_share(before: dict[int, float], after: dict[int, float]) -> float | None:
    """The busiest worker's share of the CPU time all workers used between two samples."""
    used = [after[pid] - before[pid] for pid in after.keys() & before.keys()]
    total = sum(used)
    if len(used) < 2 or total <= 0:
        return None
    return max(used) / total


def default_plan(
    profiles: Sequence[str], cpus: int, quick: bool, duration: float | None, connections: int
) -> Plan:
    if quick:
        return Plan(
            profiles=profiles,
            worker_counts=[1],
            apps=list(APPS.values()),
            workloads=[WORKLOADS["get"]],
            duration=duration or 3.0,
            warmup=1.0,
            connections=connections,
        )
    return Plan(
        profiles=profiles,
        worker_counts=sorted({1, cpus}),
        apps=list(APPS.values()),
        workloads=list(WORKLOADS.values()),
        duration=duration or 4.0,
        warmup=1.0,
        connections=connections,
    )
