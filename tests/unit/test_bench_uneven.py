"""The bench measures a multi-worker point again when one worker served it alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.load import WORKLOADS, LoadResult, Workload
from bench.runner import MAX_ATTEMPTS, Plan, Point, _measure, busiest_share


@pytest.mark.parametrize(
    ("before", "after", "share"),
    [
        ({1: 0.0, 2: 0.0}, {1: 3.0, 2: 1.0}, 0.75),
        ({1: 5.0, 2: 5.0}, {1: 6.0, 2: 6.0}, 0.5),
        ({1: 0.0}, {1: 4.0}, None),  # one worker: nothing to balance
        ({1: 0.0, 2: 0.0}, {1: 0.0, 2: 0.0}, None),  # no work
        ({1: 0.0, 2: 0.0}, {1: 2.0, 3: 9.0}, None),  # a worker replaced meanwhile: one left to compare
    ],
)
def test_busiest_share(before: dict[int, float], after: dict[int, float], share: float | None) -> None:
    assert busiest_share(before, after) == share


class ScriptedServer:
    """Worker CPU clocks that advance by a given split on each measured run."""

    base_url = "http://127.0.0.1:9"

    def __init__(self, splits: list[tuple[float, float]]) -> None:
        self.clock = {1: 0.0, 2: 0.0}
        self.splits: Iterator[tuple[float, float]] = iter(splits)

    def worker_cpu_seconds(self) -> dict[int, float]:
        return dict(self.clock)

    def advance(self) -> None:
        first, second = next(self.splits)
        self.clock = {1: self.clock[1] + first, 2: self.clock[2] + second}


class CountingGenerator:
    def __init__(self, server: ScriptedServer) -> None:
        self.server, self.measured = server, 0

    def run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
        if duration == 4.0:  # the measured run, not the warm-up
            self.measured += 1
            self.server.advance()
        return LoadResult(
            rps=1000.0 * self.measured, p50_ms=1.0, p99_ms=2.0, errors=0, requests=1, duration_s=4.0
        )


def _run(splits: list[tuple[float, float]], workload: str = "get") -> tuple[Point, CountingGenerator]:
    plan = Plan(["uvicorn"], [2], [], [WORKLOADS[workload]], duration=4.0, warmup=1.0, connections=64)
    server = ScriptedServer(splits)
    generator = CountingGenerator(server)
    point = Point("uvicorn", 2, "service", workload)
    _measure(plan, generator, server, WORKLOADS[workload], point)  # type: ignore[arg-type]
    return point, generator


def test_an_even_point_is_measured_once() -> None:
    point, generator = _run([(2.0, 1.8)])
    assert (generator.measured, point.rps, point.uneven_attempts) == (1, 1000.0, [])


def test_a_point_one_worker_served_alone_is_measured_again() -> None:
    point, generator = _run([(4.0, 0.1), (2.0, 2.0)])
    assert (generator.measured, point.rps, point.busiest_worker_share) == (2, 2000.0, 0.5)
    assert point.uneven_attempts == [0.98]


def test_attempts_are_bounded_and_the_last_is_kept() -> None:
    point, generator = _run([(4.0, 0.0)] * MAX_ATTEMPTS)
    assert generator.measured == MAX_ATTEMPTS
    assert point.busiest_worker_share == 1.0
    assert len(point.uneven_attempts) == MAX_ATTEMPTS - 1


def test_a_wait_bound_point_is_not_measured_again() -> None:
    # GET /io's rate is set by its 10 ms wait: one worker serving it all limits nothing.
    point, generator = _run([(1.0, 0.0)], workload="io")
    assert (generator.measured, point.busiest_worker_share, point.uneven_attempts) == (1, 1.0, [])
