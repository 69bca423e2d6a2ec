"""The benchmark matrix: profile x workers x app x workload; one server process per profile, workers, app.

The ratios on `GET /` and `POST /echo` decide whether the service keeps up with bare FastAPI,
so those points are measured in rounds: the servers of one (profile, workers) run side by side,
each round measures every app once, one after the other, and each app's point is its median
round. A burst of noise on a shared machine then lands on one round of one app, not on a ratio.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

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
# How long a server may take, once ready, until all its workers listen.
ALL_WORKERS_SECONDS = 15.0


@dataclass(frozen=True)
class App:
    key: str
    import_string: str
    ready_path: str
    settings: Mapping[str, str] = field(default_factory=dict)  # on top of the production defaults
    workloads: frozenset[str] | None = None  # None: every workload of the plan
    label: str = ""


APPS: dict[str, App] = {
    # The headline: the service as users run it, at the production defaults (access line on).
    "service": App("service", "bench.apps:service", "/readyz", label="service, production defaults"),
    # The same with the access line off: what the line costs.
    "service-quiet": App(
        "service-quiet",
        "bench.apps:service",
        "/readyz",
        settings={"APP_ACCESS_LOG": "false"},
        workloads=frozenset({"get", "echo"}),
        label="service, access log off",
    ),
    "bare": App("bare", "bench.apps:bare_fastapi", "/"),  # no /readyz: the first 200 on GET /
    "raw": App("raw", "bench.apps:raw_asgi", "/"),
}
# The workloads measured in rounds, alternating the apps (see the module docstring).
ROUNDS_WORKLOADS = ("get", "echo")


@dataclass(frozen=True)
class Plan:
    profiles: Sequence[str]
    worker_counts: Sequence[int]
    apps: Sequence[App]
    workloads: Sequence[Workload]
    duration: float
    warmup: float
    connections: int
    rounds: int = 1
    round_duration: float = 0.0  # seconds per round of the rounds workload; 0: `duration`

    @property
    def servers(self) -> int:
        return len(self.profiles) * len(self.worker_counts) * len(self.apps)

    def app_workloads(self, app: App) -> list[Workload]:
        # The raw ASGI app has no WebSocket or event-stream route: those compare service and bare FastAPI.
        return [
            w
            for w in self.workloads
            if (app.workloads is None or w.key in app.workloads) and (w.kind == "http" or app.key != "raw")
        ]

    @property
    def points(self) -> int:
        per_group = sum(len(self.app_workloads(app)) for app in self.apps)
        return len(self.profiles) * len(self.worker_counts) * per_group

    @property
    def seconds(self) -> float:
        """About how long the measuring takes (warm-ups included), start-ups aside."""
        total = 0.0
        for app in self.apps:
            for workload in self.app_workloads(app):
                if workload.key in ROUNDS_WORKLOADS and self.rounds > 1:
                    total += self.warmup + self.rounds * (self.round_duration or self.duration)
                else:
                    total += self.warmup + self.duration
        return total * len(self.profiles) * len(self.worker_counts)


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
    rounds_rps: list[float] = field(default_factory=list)  # every round's req/s; the point is the median
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
            runs = [ServerRun(profile, workers, app.key) for app in plan.apps]
            results.servers.extend(runs)
            results.points.extend(_run_group(plan, generator, progress, runs))
    return results


def _run_group(
    plan: Plan, generator: LoadGenerator, progress: Progress, runs: list[ServerRun]
) -> list[Point]:
    """One server per app, side by side: the rounds of `GET /` alternate the apps, then the rest."""
    apps = list(plan.apps)
    points = {
        app.key: [Point(run.profile, run.workers, app.key, w.key) for w in plan.app_workloads(app)]
        for app, run in zip(apps, runs, strict=True)
    }
    servers: dict[str, Server] = {}
    with contextlib.ExitStack() as stack:
        for app, run in zip(apps, runs, strict=True):
            server = _start(stack, progress, app, run)
            if server is not None:
                servers[app.key] = server
        _measure_rounds(plan, generator, progress, servers, points)
        for app, run in zip(apps, runs, strict=True):
            for point, workload in zip(points[app.key], plan.app_workloads(app), strict=True):
                label = f"{run.profile} x{run.workers} {app.key}: {workload.label}"
                if app.key not in servers:
                    point.failure = "server failed"
                    progress(f"{label}: failed", True)
                elif point.rps is None and point.failure is None:
                    progress(label, False)
                    _measure(plan, generator, servers[app.key], workload, point)
                    progress(label, True)
            if app.key in servers:
                _note_memory_after(servers[app.key], run)
    for app, run in zip(apps, runs, strict=True):
        if app.key in servers:
            run.exit_status = servers[app.key].process.returncode
    return [point for app in apps for point in points[app.key]]


def _start(stack: contextlib.ExitStack, progress: Progress, app: App, run: ServerRun) -> Server | None:
    """Launch one app's server (stopped when `stack` closes); note its start-up time and memory."""
    progress(f"{run.profile} x{run.workers} {app.key}: starting", False)
    try:
        server = stack.enter_context(
            running_server(run.profile, app.import_string, run.workers, app.settings)
        )
        run.ready_s = server.wait_ready(app.ready_path)
        # Ready means one worker answers; on a busy machine the others may still be starting.
        deadline = time.monotonic() + ALL_WORKERS_SECONDS
        while len(server.worker_processes()) < run.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        before = server.worker_rss()
    except (ServerError, psutil.Error, OSError) as error:
        run.failure = f"{type(error).__name__}: {error}"
        return None
    run.worker_processes = len(before)
    run.rss_before_mb = sum(before) / MB
    return server


def _measure_rounds(
    plan: Plan,
    generator: LoadGenerator,
    progress: Progress,
    servers: dict[str, Server],
    points: dict[str, list[Point]],
) -> None:
    """Round after round, each app once on each rounds workload; each point keeps its median round."""
    if plan.rounds < 2:
        return
    measured = replace(plan, duration=plan.round_duration or plan.duration)
    for workload in (w for w in plan.workloads if w.key in ROUNDS_WORKLOADS):
        in_rounds = {key: point for key in servers for point in points[key] if point.workload == workload.key}
        samples: dict[str, list[Point]] = {key: [] for key in in_rounds}
        for number in range(plan.rounds):
            for key, point in in_rounds.items():
                progress(
                    f"{point.profile} x{point.workers} {key}: {workload.label} round {number + 1}", False
                )
                sample = Point(point.profile, point.workers, key, workload.key)
                # Each app is warmed up before its first round only.
                _measure(
                    measured if number == 0 else replace(measured, warmup=0.0),
                    generator,
                    servers[key],
                    workload,
                    sample,
                )
                samples[key].append(sample)
        for key, point in in_rounds.items():
            _keep_median(point, samples[key])
            progress(f"{point.profile} x{point.workers} {key}: {workload.label}", True)


def _note_memory_after(server: Server, run: ServerRun) -> None:
    with contextlib.suppress(psutil.Error, OSError):
        after = server.worker_rss()
        run.rss_after_mb = sum(after) / MB
        run.rss_per_worker_mb = run.rss_after_mb / len(after) if after else None
        if len(after) != run.worker_processes:
            run.failure = f"worker processes changed during the run: {run.worker_processes} -> {len(after)}"


def _keep_median(point: Point, samples: list[Point]) -> None:
    """The point becomes its median round (by req/s); every round's req/s is kept beside it."""
    measured = sorted((s for s in samples if s.rps is not None), key=lambda s: s.rps or 0.0)
    if not measured:
        point.failure = next((s.failure for s in samples if s.failure), "no round measured")
        return
    middle = measured[(len(measured) - 1) // 2]
    point.rps, point.p50_ms, point.p99_ms = middle.rps, middle.p50_ms, middle.p99_ms
    point.errors, point.requests, point.duration_s = middle.errors, middle.requests, middle.duration_s
    point.busiest_worker_share = middle.busiest_worker_share
    point.uneven_attempts = [share for s in samples for share in s.uneven_attempts]
    point.rounds_rps = [round(s.rps or 0.0, 1) for s in samples if s.rps is not None]
    if len(measured) % 2 == 0 and len(measured) > 1:  # an even count: the mean of the middle two
        point.rps = statistics.median(s.rps or 0.0 for s in measured)


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
            workloads=[WORKLOADS["get"], WORKLOADS["echo"]],
            duration=duration or 3.0,
            warmup=1.0,
            connections=connections,
            rounds=3,
            round_duration=duration or 2.0,
        )
    return Plan(
        profiles=profiles,
        worker_counts=sorted({1, cpus}),
        apps=list(APPS.values()),
        workloads=list(WORKLOADS.values()),
        duration=duration or 3.0,
        warmup=1.0,
        connections=connections,
        rounds=5,
        round_duration=duration or 1.5,
    )
