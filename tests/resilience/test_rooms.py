"""Rooms across workers and instances, on a real Redis (tests/support/redis.py), on every profile.

Per profile, two instances of 2 workers each share one Redis (the `pair`), and in this order:
- fan-out: two publishers (HTTP on one instance, a WebSocket on the other) at once; every member
  on all four workers gets every message, all of them in one and the same order;
- a member that stops reading is closed with 1008 while the others get everything;
- Redis killed: every member is closed with 1013 at once, `/` and `/readyz` keep answering 200,
  a publish gets 503; Redis restarted: the rooms work again across instances, unaided;
- SIGTERM: the room sessions get 1012 and the event stream `event: shutdown`.
Figures (delivered/sent, p99 latency, outage recovery) go to the resilience report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from deploy.profiles import PROFILES
from devkit.process import LOOPBACK, ServerProcess, running_server
from tests.resilience.support import Report, wait_for, wait_workers
from tests.support.redis import RedisServer, running_redis

pytestmark = [pytest.mark.resilience, pytest.mark.demo_routes]

MESSAGES_PER_PUBLISHER = 100
SLOW_MESSAGES, SLOW_MESSAGE_BYTES = 200, 50_000  # 10 MB: past the socket buffers on the way
SUBSCRIBER_BUFFER = 262_144
SLOW_RECEIVE_BUFFER = 65_536
SLOW_READ_SECONDS = 3.0
PACING = 2  # messages the slow test's sender keeps ahead of its readers: 100 kB, inside the buffer
MAX_SOCKETS = 40  # opened until both workers of an instance hold members (the kernel spreads them)
STEP_SECONDS = 20.0
Pair = tuple[ServerProcess, ServerProcess]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module", params=sorted(PROFILES))
def pair(request: pytest.FixtureRequest, redis: RedisServer) -> Iterator[Pair]:
    env = {
        "APP_WORKERS": "2",
        "APP_BROKER_URL": redis.url,
        "APP_ACCESS_LOG": "false",
        "APP_ROOMS_SUBSCRIBER_BUFFER_BYTES": str(SUBSCRIBER_BUFFER),
        "APP_GRACEFUL_TIMEOUT": "10",
    }
    with running_server(request.param, env) as first, running_server(request.param, env) as second:
        for server in (first, second):
            wait_workers(server, 2)
        yield first, second


def with_broker(pair: Pair) -> None:
    for server in pair:
        wait_broker(server, 2)


def wait_broker(server: ServerProcess, workers: int) -> None:
    """Readiness does not wait for the broker (docs/rooms.md): until every worker has it."""

    def connected() -> bool:
        text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
        return metric_sum(text, "rooms_broker_connected") == workers

    assert wait_for(connected, STEP_SECONDS) is not None, f"{server.profile}: workers without the broker"


def metric_sum(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def room_url(server: ServerProcess, room: str) -> str:
    return f"ws://{LOOPBACK}:{server.port}/rooms/{room}"


def workers_with_members(server: ServerProcess) -> int:
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    pids = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "rooms_subscribers"
                and sample.labels.get("kind") == "websocket"
                and sample.value
            ):
                pids.add(sample.labels.get("pid"))
    return len(pids)


async def members_on_every_worker(
    stack: contextlib.AsyncExitStack, server: ServerProcess, room: str
) -> list[ClientConnection]:
    members: list[ClientConnection] = []
    while len(members) < MAX_SOCKETS:
        for _ in range(4):
            members.append(await stack.enter_async_context(connect(room_url(server, room), max_size=None)))
        if await asyncio.to_thread(workers_with_members, server) == 2:
            return members
    raise AssertionError(f"{MAX_SOCKETS} WebSockets did not reach both workers of {server.profile}")


async def receive(ws: ClientConnection, count: int) -> list[str]:
    return [str(await ws.recv()) for _ in range(count)]


def label(message: dict[str, object]) -> str:
    return f"{message['from']}{message['n']}"


def stamped(origin: str, number: int) -> str:
    return json.dumps({"from": origin, "n": number, "at": time.monotonic()})


async def fan_out(first: ServerProcess, second: ServerProcess) -> dict[str, object]:
    total = 2 * MESSAGES_PER_PUBLISHER
    async with contextlib.AsyncExitStack() as stack:
        members = await members_on_every_worker(stack, first, "fan")
        members += await members_on_every_worker(stack, second, "fan")
        publisher = members[-1]  # a member too: it gets its own messages back
        readers = [asyncio.create_task(receive(ws, total)) for ws in members]

        async def over_http() -> None:
            async with httpx.AsyncClient(base_url=first.base_url, timeout=5) as client:
                for n in range(MESSAGES_PER_PUBLISHER):
                    answer = await client.post("/rooms/fan/messages", json={"message": stamped("http", n)})
                    assert answer.status_code == 202

        async def over_websocket() -> None:
            for n in range(MESSAGES_PER_PUBLISHER):
                await publisher.send(stamped("ws", n))

        await asyncio.gather(over_http(), over_websocket())
        received = await asyncio.wait_for(asyncio.gather(*readers), STEP_SECONDS)
    orders = {
        tuple(json.loads(text)["from"] + str(json.loads(text)["n"]) for text in got) for got in received
    }
    assert len(orders) == 1, "members saw different orders"
    (order,) = orders
    for origin in ("http", "ws"):
        assert [item for item in order if item.startswith(origin)] == [
            f"{origin}{n}" for n in range(MESSAGES_PER_PUBLISHER)
        ]
    return {"members": len(members), "delivered": f"{sum(map(len, received))}/{total * len(members)}"}


async def latency_p99(server: ServerProcess, other: ServerProcess) -> float:
    """One publisher, a member on the other instance: p99 seconds from publish to receipt."""
    async with connect(room_url(other, "latency")) as member, connect(room_url(server, "latency")) as sender:
        # The sender gets its own messages back: read them, or its close waits behind them.
        echoes = asyncio.create_task(receive(sender, 200))
        latencies: list[float] = []
        for n in range(200):
            await sender.send(stamped("ws", n))
            while True:
                text = await member.recv()
                if json.loads(text)["n"] == n:
                    latencies.append(time.monotonic() - json.loads(text)["at"])
                    break
        await asyncio.wait_for(echoes, STEP_SECONDS)
    return statistics.quantiles(latencies, n=100)[98]


@pytest.mark.timeout(120)
def test_every_member_on_four_workers_gets_every_message_in_one_order(pair: Pair, report: Report) -> None:
    first, second = pair
    with_broker(pair)
    figures = asyncio.run(fan_out(first, second))
    p99 = asyncio.run(latency_p99(first, second))
    report.add(f"rooms_fan_out[{first.profile}]", **figures, p99_ms=round(p99 * 1000, 2))


async def slow_member(server: ServerProcess) -> tuple[int | None, int, int]:
    url = room_url(server, "slow")
    # Incompressible: a server that negotiates permessage-deflate (hypercorn) sends "xxx..." as a few bytes.
    payload = base64.b64encode(os.urandom(SLOW_MESSAGE_BYTES * 3 // 4)).decode()
    received = {"fast": 0, "sender": 0}
    progress = asyncio.Condition()

    async def read_all(ws: ClientConnection, name: str) -> None:
        for _ in range(SLOW_MESSAGES):
            await ws.recv()
            async with progress:
                received[name] += 1
                progress.notify_all()

    # max_queue=1: the client stops reading its socket once one message waits; with a small
    # receive buffer (no autotuning: up to 32 MB on loopback here) the server's buffers fill.
    slow_socket = socket.socket()
    slow_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RECEIVE_BUFFER)
    slow_socket.connect((LOOPBACK, server.port))
    async with (
        connect(url, sock=slow_socket, max_queue=1, max_size=None) as slow,
        connect(url, max_size=None) as fast,
        connect(url, max_size=None) as sender,
    ):
        # The sender is a member too: both it and `fast` read everything, and the sender keeps at
        # most PACING messages ahead of them, well inside their buffer: only `slow` falls behind.
        readers = [
            asyncio.create_task(read_all(fast, "fast")),
            asyncio.create_task(read_all(sender, "sender")),
        ]
        sent = 0

        def caught_up() -> bool:
            return min(received.values()) >= sent - PACING

        for _ in range(SLOW_MESSAGES):
            async with progress:
                await asyncio.wait_for(progress.wait_for(caught_up), STEP_SECONDS)
            await sender.send(payload)
            sent += 1
        await asyncio.wait_for(asyncio.gather(*readers), STEP_SECONDS)
        got_fast = received["fast"]
        got_slow, code = 0, None
        try:
            while True:  # a message at a time: one still open after its backlog is not waited on long
                await asyncio.wait_for(slow.recv(), SLOW_READ_SECONDS)
                got_slow += 1
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
        except TimeoutError:
            code = None  # still open: it was never closed
    return code, got_slow, got_fast


@pytest.mark.timeout(60)
def test_a_member_that_stops_reading_is_closed_1008_and_the_others_get_everything(pair: Pair) -> None:
    with_broker(pair)
    code, got_slow, got_fast = asyncio.run(slow_member(pair[0]))
    assert got_fast == SLOW_MESSAGES
    assert (code, got_slow < SLOW_MESSAGES) == (1008, True)


async def outage(pair: Pair, redis: RedisServer) -> dict[str, object]:
    first, second = pair
    async with contextlib.AsyncExitStack() as stack:
        members = [
            await stack.enter_async_context(connect(room_url(s, "outage"))) for s in pair for _ in range(2)
        ]
        stream = await open_room_stream(stack, second, "outage")
        await members[0].send("before")
        assert [await ws.recv() for ws in members] == ["before"] * len(members)
        redis.kill()
        killed = time.monotonic()
        codes = []
        for ws in members:
            try:
                await asyncio.wait_for(ws.recv(), STEP_SECONDS)
            except ConnectionClosed as closed:
                codes.append(closed.rcvd.code if closed.rcvd is not None else None)
        closed_after = time.monotonic() - killed
        stream_told = await asyncio.wait_for(stream.read(), STEP_SECONDS)
        async with httpx.AsyncClient(timeout=5) as client:
            during = [
                (await client.get(f"{server.base_url}{path}")).status_code
                for server in pair
                for path in ("/", "/readyz")
            ]
            refused = await client.post(f"{first.base_url}/rooms/outage/messages", json={"message": "x"})
    await asyncio.to_thread(redis.start)
    restarted = time.monotonic()
    recovered = await until_rooms_work(first, second)
    return {
        "codes": codes,
        "closed_after_s": round(closed_after, 3),
        "during": during,
        "publish_during": (refused.status_code, refused.headers.get("retry-after")),
        "stream": b"event: unavailable\nretry: " in stream_told and b'"message": "before"' in stream_told,
        "recovered_after_s": round(recovered - restarted, 3),
    }


async def until_rooms_work(first: ServerProcess, second: ServerProcess) -> float:
    """Join on `second` and publish on `first` until a message crosses; when it first did."""
    deadline = time.monotonic() + STEP_SECONDS
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ConnectionClosed, TimeoutError, InvalidStatus):
                async with connect(room_url(second, "back"), open_timeout=2) as member:
                    answer = await client.post(
                        f"{first.base_url}/rooms/back/messages", json={"message": "back"}
                    )
                    if answer.status_code == 202 and await asyncio.wait_for(member.recv(), 2) == "back":
                        return time.monotonic()
            await asyncio.sleep(0.05)
    logs = "\n".join(server.log()[-4000:] for server in (first, second))
    raise AssertionError(f"rooms did not work again within {STEP_SECONDS:.0f}s of Redis restarting:\n{logs}")


@pytest.mark.timeout(60)
def test_redis_killed_closes_members_1013_and_the_service_recovers_unaided(
    pair: Pair, redis: RedisServer, report: Report
) -> None:
    with_broker(pair)
    seen = asyncio.run(outage(pair, redis))
    report.add(f"rooms_outage[{pair[0].profile}]", **seen)
    assert seen["codes"] == [1013] * 4
    assert seen["during"] == [200] * 4  # readiness does not follow the broker (docs/rooms.md)
    assert seen["publish_during"] == (503, "1")
    assert seen["stream"], "the event stream did not get `before`, then `event: unavailable`"


async def open_room_stream(
    stack: contextlib.AsyncExitStack, server: ServerProcess, room: str
) -> asyncio.StreamReader:
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    stack.callback(writer.close)
    writer.write(f"GET /rooms/{room}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readuntil(b": joined\n\n")  # subscribed
    return reader


async def stop_with_members(server: ServerProcess) -> tuple[list[int | None], bool, int]:
    async with contextlib.AsyncExitStack() as stack:
        members = [await stack.enter_async_context(connect(room_url(server, "drain"))) for _ in range(4)]
        reader = await open_room_stream(stack, server, "drain")
        server.signal(signal.SIGTERM)
        codes = []
        for ws in members:
            try:
                await asyncio.wait_for(ws.recv(), STEP_SECONDS)
            except ConnectionClosed as closed:
                codes.append(closed.rcvd.code if closed.rcvd is not None else None)
        body = await asyncio.wait_for(reader.read(), STEP_SECONDS)
    code = await asyncio.to_thread(server.wait_exit, STEP_SECONDS)
    return codes, b"event: shutdown" in body, code


@pytest.mark.timeout(60)
def test_sigterm_closes_room_sessions_1012(pair: Pair) -> None:
    """Last of the module for each profile: the pair's second instance does not come back."""
    with_broker(pair)
    codes, stream_told, code = asyncio.run(stop_with_members(pair[1]))
    assert codes == [1012] * 4
    assert stream_told
    assert code == 0
