"""deploy/reporting_app.py: what a supervised worker tells deploy/supervisor.py, from ASGI alone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from multiprocessing import Pipe, get_context
from multiprocessing.connection import Connection
from typing import Any

import pytest

from deploy.reporting_app import ReportingApp, recycle_after
from deploy.supervisor import READY, RETIRING, StopFlag, WorkerLink
from deploy.worker_timing import ACCEPTING_SETTLE_SECONDS

SETTLED = ACCEPTING_SETTLE_SECONDS * 3


@pytest.fixture
def link() -> Iterator[tuple[WorkerLink, Connection]]:
    """A worker's real link to the supervisor, and the supervisor's end of its reports."""
    reader, writer = Pipe(duplex=False)
    spawn = get_context("spawn")
    yield WorkerLink(StopFlag(spawn.RawValue("b", 0)), writer, spawn.RawValue("d", 0.0), os.getpid()), reader
    reader.close()
    writer.close()


def reports(reader: Connection) -> list[str]:
    found = []
    while reader.poll():
        found.append(reader.recv())
    return found


def lifespan_app(startup: str | None) -> Any:
    """An app whose lifespan start-up sends `startup` (None: it has no lifespan and raises)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            if startup is None:
                raise RuntimeError("no lifespan")
            await receive()
            await send({"type": startup})
            await receive()  # shutdown: never comes in these tests
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    return app


async def start_up(app: ReportingApp) -> list[str]:
    """The server's side of a lifespan start-up; returns what the app sent, once settled."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await queue.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(app({"type": "lifespan"}, queue.get, send))
    await asyncio.sleep(SETTLED)
    lifespan.cancel()  # the server cancels it at the end
    await asyncio.gather(lifespan, return_exceptions=True)
    return sent


async def serve_requests(app: ReportingApp, count: int) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_: dict[str, Any]) -> None:
        pass

    for _ in range(count):
        await app({"type": "http"}, receive, send)


def test_ready_once_the_lifespan_start_up_is_complete_and_the_loop_beats(
    link: tuple[WorkerLink, Connection],
) -> None:
    worker, reader = link
    app = ReportingApp(lifespan_app("lifespan.startup.complete"), worker, None)
    assert asyncio.run(start_up(app)) == ["lifespan.startup.complete"]  # passed on to the server
    assert reports(reader) == [READY]
    assert worker.heartbeat.value > 0


def test_ready_when_the_app_has_no_lifespan(link: tuple[WorkerLink, Connection]) -> None:
    worker, reader = link
    asyncio.run(start_up(ReportingApp(lifespan_app(None), worker, None)))
    assert reports(reader) == [READY]


def test_never_ready_when_the_start_up_failed(link: tuple[WorkerLink, Connection]) -> None:
    worker, reader = link
    asyncio.run(start_up(ReportingApp(lifespan_app("lifespan.startup.failed"), worker, None)))
    assert reports(reader) == []


def test_ready_only_after_the_server_had_time_to_accept(link: tuple[WorkerLink, Connection]) -> None:
    worker, reader = link
    app = ReportingApp(lifespan_app("lifespan.startup.complete"), worker, None)

    async def early() -> list[str]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await queue.put({"type": "lifespan.startup"})

        async def send(_: dict[str, Any]) -> None:
            pass

        lifespan = asyncio.create_task(app({"type": "lifespan"}, queue.get, send))
        await asyncio.sleep(ACCEPTING_SETTLE_SECONDS / 4)
        found = reports(reader)
        lifespan.cancel()
        await asyncio.gather(lifespan, return_exceptions=True)
        return found

    assert asyncio.run(early()) == []


def test_retiring_once_past_the_limit_and_serving_on(link: tuple[WorkerLink, Connection]) -> None:
    worker, reader = link
    app = ReportingApp(lifespan_app("lifespan.startup.complete"), worker, recycle_after=2)
    asyncio.run(serve_requests(app, 2))
    assert reports(reader) == []  # at its limit, not past it
    asyncio.run(serve_requests(app, 5))  # still served
    assert reports(reader) == [RETIRING]  # said once


def test_no_limit_no_retiring(link: tuple[WorkerLink, Connection]) -> None:
    worker, reader = link
    asyncio.run(serve_requests(ReportingApp(lifespan_app(None), worker, None), 50))
    assert reports(reader) == []


def test_each_worker_draws_its_own_share_of_the_jitter() -> None:
    assert recycle_after(0, 10) is None
    assert recycle_after(100, 0) == 100
    drawn = {recycle_after(100, 10) for _ in range(400)}
    assert drawn == set(range(100, 111))
