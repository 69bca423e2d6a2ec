"""What keeps a request cheap, checked by behaviour: each test fails if its shortcut is undone or wrong."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram

from service import multiprocess_metrics as metrics
from service import request_id, session_metrics
from service.app import create_app
from service.settings import Settings


class _CountingValue:
    """A labelled metric's public `inc`, counted."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.writes: list[float] = []

    def inc(self, amount: float = 1) -> None:
        self.writes.append(amount)
        self.value.inc(amount)


def _value(metric: Any) -> float:
    """A labelled counter's or gauge's value, as a registry collects it (the public way)."""
    samples = [s for family in metric.collect() for s in family.samples if not s.name.endswith("_created")]
    return float(samples[0].value)


@pytest.mark.parametrize(
    "seconds",
    [[0.0], [0.005], [0.0050001, 0.01, 0.3], [2.5, 10.0, 10.5, 1e6], [0.001] * 7],
)
def test_request_series_write_what_the_public_methods_write(seconds: list[float]) -> None:
    route = f"/request-series-{id(seconds)}"
    series = metrics.RequestSeries("GET", route, 200)

    async def requests() -> None:
        for value in seconds:
            series.observe(value)

    asyncio.run(requests())
    metrics.flush()
    reference = Histogram(
        "reference_seconds", "", buckets=metrics.DURATION_BUCKETS, registry=CollectorRegistry()
    )
    for value in seconds:
        reference.observe(value)

    def samples(histogram: Any, labels: dict[str, str]) -> dict[str, float]:
        return {
            f"{sample.name.rsplit('_', 1)[-1]}{sample.labels.get('le', '')}": sample.value
            for family in histogram.collect()
            for sample in family.samples
            if not sample.name.endswith("_created") and labels.items() <= sample.labels.items()
        }

    assert samples(metrics.DURATION, {"route": route}) == samples(reference, {})
    assert _value(metrics.REQUESTS.labels("GET", route, "200")) == len(seconds)


def test_in_progress_counts_the_requests_that_outlast_a_loop_iteration() -> None:
    gauge = metrics.IN_PROGRESS.labels("PATCH")
    before = _value(gauge)

    async def requests() -> None:
        quick = metrics.in_progress("PATCH")
        quick.enter()
        quick.leave()
        await asyncio.sleep(0)  # one loop iteration: the flush runs
        assert _value(gauge) == before
        quick.enter()
        await asyncio.sleep(0)
        assert _value(gauge) == before + 1
        quick.leave()
        await asyncio.sleep(0)
        assert _value(gauge) == before

    asyncio.run(requests())


def test_a_loop_iteration_writes_each_series_once() -> None:
    series = metrics.RequestSeries("GET", "/written-once", 200)
    counter = _CountingValue(series.count)
    series.count = counter

    async def iteration() -> None:
        for _ in range(10):
            series.observe(0.001)
        assert counter.writes == []  # nothing written yet
        await asyncio.sleep(0)
        assert counter.writes == [10]

    asyncio.run(iteration())
    assert _value(counter.value) == 10


def test_the_app_writes_its_metrics_once_per_loop_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(Settings())
    series, in_flight = metrics.request_series("GET", "/", 200), metrics.in_progress("GET")
    counter, gauge = _CountingValue(series.count), _CountingValue(in_flight.gauge)
    monkeypatch.setattr(series, "count", counter)
    monkeypatch.setattr(in_flight, "gauge", gauge)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def five_requests_in_one_iteration() -> None:
        for _ in range(5):
            await app(dict(scope), receive, send)
        await asyncio.sleep(0)

    asyncio.run(five_requests_in_one_iteration())
    assert counter.writes == [5]
    assert gauge.writes == []  # none of them outlasted the iteration


def test_a_scrape_includes_what_was_not_flushed_yet() -> None:
    series = metrics.RequestSeries("GET", "/not-flushed-yet", 200)

    async def request_then_scrape() -> bytes:
        series.observe(0.002)
        return metrics.render(None)

    text = asyncio.run(request_then_scrape()).decode()
    assert 'http_requests_total{method="GET",route="/not-flushed-yet",status="200"} 1.0' in text


def test_a_scrape_counts_the_requests_that_ended_in_its_own_iteration() -> None:
    """The edge layer keeps an iteration's requests until its end (service/request_records.py); a
    scrape in that iteration counts them all the same."""
    app = create_app(Settings())
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def requests_then_scrape_in_one_iteration() -> tuple[bytes, bytes]:
        before = metrics.render(None)
        for _ in range(3):
            await app(dict(scope), receive, send)
        return before, metrics.render(None)

    before, after = asyncio.run(requests_then_scrape_in_one_iteration())
    series = b'http_requests_total{method="GET",route="/",status="200"} '

    def counted(text: bytes) -> float:
        return float(text.split(series)[1].split(b"\n")[0]) if series in text else 0.0

    assert counted(after) == counted(before) + 3


def test_a_batched_counter_writes_once_per_loop_iteration_and_before_a_scrape() -> None:
    counted = metrics.BatchedCounter(metrics.BY_PROTOCOL.labels("http", "batched-test"))
    written = _CountingValue(counted.count)
    counted.count = written

    async def iterations() -> bytes:
        for _ in range(7):
            counted.inc()
        counted.inc(3)
        assert written.writes == []  # nothing written yet
        await asyncio.sleep(0)
        assert written.writes == [10]
        counted.inc()
        return metrics.render(None)  # a scrape in the same iteration

    scraped = asyncio.run(iterations()).decode()
    assert 'http_requests_by_protocol_total{scheme="http",version="batched-test"} 11.0' in scraped
    assert written.writes == [10, 1]


def test_a_batched_counter_refuses_a_negative_amount_at_once() -> None:
    """As the series' own `inc` does: at the caller, not at a later flush (which would keep failing)."""
    counted = metrics.BatchedCounter(metrics.BY_PROTOCOL.labels("http", "negative-test"))
    with pytest.raises(ValueError, match="non-negative"):
        counted.inc(-1)
    assert counted.pending == 0


def test_websocket_messages_are_counted_once_per_loop_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each message in and out is counted; a session's messages of one iteration are one write each way."""
    app = create_app(Settings())
    app.state.lifecycle = "running"
    writes = []
    for direction in ("in", "out"):
        counter = session_metrics.messages_counter("/ws", direction)
        writes.append(_CountingValue(counter.count))
        monkeypatch.setattr(counter, "count", writes[-1])
    scope = {
        "type": "websocket",
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")],
        "subprotocols": [],
    }
    arriving = [{"type": "websocket.connect"}]
    arriving += [{"type": "websocket.receive", "text": f"message {n}"} for n in range(6)]
    arriving += [{"type": "websocket.disconnect", "code": 1000}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return arriving.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def session_in_one_iteration() -> None:
        await app(scope, receive, send)
        assert writes[0].writes == writes[1].writes == []
        await asyncio.sleep(0)

    asyncio.run(session_in_one_iteration())
    assert [message.get("text") for message in sent if message["type"] == "websocket.send"] == [
        f"message {n}" for n in range(6)
    ]
    assert writes[0].writes == writes[1].writes == [6]


def _count(method: str, route: str, status: str) -> float:
    metrics.flush()
    return _value(metrics.REQUESTS.labels(method, route, status))


def test_metrics_count_the_requests_that_reach_the_app() -> None:
    client = TestClient(create_app(Settings()))
    served = _count("GET", "/", "200")
    assert client.get("/").status_code == 200
    assert _count("GET", "/", "200") == served + 1


def test_a_head_request_is_counted_under_its_route() -> None:
    # HEAD runs as GET on a copy of the scope (service/middleware/head.py), where the router
    # writes the matched route.
    client = TestClient(create_app(Settings()))
    counted = _count("HEAD", "/", "200")
    assert client.head("/").status_code == 200
    assert _count("HEAD", "/", "200") == counted + 1


# With a Host allow-list or CORS, the metrics stay inside them: what they answer is not counted.
@pytest.mark.parametrize(
    ("settings", "method", "headers", "status"),
    [
        (Settings(allowed_hosts="api.example.com"), "GET", {"host": "evil.example.net"}, 400),  # type: ignore[arg-type]
        (
            Settings(cors_allow_origins="https://app.example.com"),  # type: ignore[arg-type]
            "OPTIONS",
            {"origin": "https://app.example.com", "access-control-request-method": "GET"},
            200,
        ),
    ],
)
def test_metrics_leave_out_what_host_checks_and_cors_answer(
    settings: Settings, method: str, headers: dict[str, str], status: int
) -> None:
    client = TestClient(create_app(settings), base_url="http://api.example.com")
    served = _count("GET", "/", "200")
    assert client.get("/").status_code == 200
    assert _count("GET", "/", "200") == served + 1
    answered = _count(method, "<unmatched>", str(status))
    assert client.request(method, "/", headers=headers).status_code == status
    assert _count(method, "<unmatched>", str(status)) == answered


@pytest.fixture
def fresh_ids() -> Iterator[list[int]]:
    """Count os.urandom calls made for request ids, starting from an empty pool."""
    draws: list[int] = []
    real = os.urandom

    def counting(size: int) -> bytes:
        draws.append(size)
        return real(size)

    request_id._fresh_ids.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(request_id.os, "urandom", counting)
        yield draws
    request_id._fresh_ids.clear()


def test_request_ids_are_random_and_drawn_in_bulk(fresh_ids: list[int]) -> None:
    # os.urandom releases the GIL: once per request, that costs granian a thread switch.
    ids = [request_id.new_id() for _ in range(512)]
    assert len(fresh_ids) == 2
    assert len(set(ids)) == 512
    assert all(len(one) == 32 and int(one, 16) >= 0 for one in ids)


def test_a_forked_worker_draws_its_own_ids(fresh_ids: list[int]) -> None:
    request_id.new_id()  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, request_id.new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != request_id.new_id()


def test_native_telemetry_does_not_look_for_providers_when_tracing_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace

    looked: list[bool] = []
    real = trace.get_tracer_provider

    def counting() -> Any:
        looked.append(True)
        return real()

    with TestClient(create_app(Settings())) as client:
        monkeypatch.setattr(trace, "get_tracer_provider", counting)
        assert client.get("/").status_code == 200
    assert looked == []


_COUNT_THEN_LEAVE = """
import multiprocessing, sys
from service import exit_flush
from service import multiprocess_metrics as metrics

def count_then_leave():
    counted = metrics.BatchedCounter(metrics.BY_PROTOCOL.labels("http", "at-exit"))
    counted.inc(3)  # outside an event loop: written at the next flush, or at the exit
    exit_flush.arm_for_this_process()  # as the first flush an event loop schedules does

if sys.argv[1] == "os._exit":  # a multiprocessing worker (granian's) leaves with os._exit
    worker = multiprocessing.get_context("fork").Process(target=count_then_leave)
    worker.start()
    worker.join()
else:  # uvicorn's, hypercorn's and gunicorn's workers leave through sys.exit
    count_then_leave()
"""
_READ = """
from prometheus_client import CollectorRegistry, multiprocess
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
print(registry.get_sample_value("http_requests_by_protocol_total", {"scheme": "http", "version": "at-exit"}))
"""


@pytest.mark.parametrize("leaving", ["sys.exit", "os._exit"])
def test_what_is_counted_is_written_when_a_worker_exits(leaving: str, tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", _COUNT_THEN_LEAVE, leaving], env=env, check=True, timeout=60)
    read = subprocess.run(
        [sys.executable, "-c", _READ], env=env, check=True, timeout=60, capture_output=True, text=True
    )
    assert read.stdout.strip() == "3.0"
