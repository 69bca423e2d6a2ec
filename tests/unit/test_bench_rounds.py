"""The bench measures GET / in rounds that alternate the apps, and keeps each app's median round."""

from __future__ import annotations

from bench.load import WORKLOADS, LoadResult, Workload
from bench.runner import Plan, Point, _measure_rounds


class OneWorker:
    def __init__(self, key: str) -> None:
        self.base_url = f"http://127.0.0.1:9/{key}"

    def worker_cpu_seconds(self) -> dict[int, float]:
        return {1: 0.0}


class ScriptedGenerator:
    """Answers each measured run with the next req/s of its app's script; notes every run."""

    def __init__(self, scripts: dict[str, list[float]]) -> None:
        self.scripts = {key: iter(values) for key, values in scripts.items()}
        self.runs: list[tuple[str, float]] = []

    def run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
        key = base_url.rsplit("/", 1)[-1]
        self.runs.append((key, duration))
        rps = next(self.scripts[key]) if duration == 2.0 else 0.0  # 1.0: a warm-up
        return LoadResult(
            requests=int(rps * duration), duration_s=duration, rps=rps, p50_ms=1.0, p99_ms=2.0, errors=0
        )


def test_rounds_alternate_the_apps_and_each_point_is_its_median_round() -> None:
    plan = Plan(["uvicorn"], [1], [], [WORKLOADS["get"]], duration=4.0, warmup=1.0, connections=8, rounds=3,
                round_duration=2.0)  # fmt: skip
    generator = ScriptedGenerator({"service": [900.0, 100.0, 1000.0], "bare": [950.0, 990.0, 10.0]})
    servers = {key: OneWorker(key) for key in ("service", "bare")}
    points = {key: [Point("uvicorn", 1, key, "get")] for key in servers}
    _measure_rounds(plan, generator, lambda description, done: None, servers, points)  # type: ignore[arg-type]

    measured = [key for key, duration in generator.runs if duration == 2.0]
    assert measured == ["service", "bare"] * 3
    warmups = [key for key, duration in generator.runs if duration == 1.0]
    assert warmups == ["service", "bare"]  # before each app's first round only
    service, bare = points["service"][0], points["bare"][0]
    assert (service.rps, service.rounds_rps) == (900.0, [900.0, 100.0, 1000.0])
    assert (bare.rps, bare.rounds_rps) == (950.0, [950.0, 990.0, 10.0])
