"""The fan-out benchmark's client (bench/fanout.py): members of a room on every worker of two
instances, publishers, and what each member got.

A message is `{"o": origin, "n": number, "t": perf_counter()}`, stamped just before it is sent:
the members are read by this same process, so publish-to-receipt latency needs no shared clock
(it includes this client's own event loop, the same for both apps).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from bench.servers import Server
from devkit.process import LOOPBACK

OPEN_SECONDS = 10.0
PHASE_SECONDS = 20.0  # a phase that takes longer ends, and what is missing counts as lost
MAX_OPENS = 40  # WebSockets opened per instance until each worker holds its share
PROBE_SECONDS = 2.0
RECOVERY_SECONDS = 20.0


class FanoutError(Exception):
    """The room could not be set up as planned (members on every worker)."""


@dataclass
class Member:
    kind: str  # "websocket" or "event_stream"
    local_port: int
    next_text: Callable[[], Awaitable[str]]
    close: Callable[[], Awaitable[None]]
    ws: ClientConnection | None = None


@dataclass
class Delivery:
    origin: str
    number: int
    latency_s: float
    at: float  # perf_counter at receipt


@dataclass
class Phase:
    """One publishing phase: what was sent, what every member got, in what order, how fast."""

    sent: int = 0
    members: int = 0
    delivered: int = 0
    out_of_order: int = 0  # members whose order differs from the first member's, or misses a number
    seconds: float = 0.0  # first send to last receipt
    p50_ms: float | None = None
    p99_ms: float | None = None
    failure: str | None = None

    @property
    def expected(self) -> int:
        return self.sent * self.members

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    @property
    def deliveries_per_s(self) -> float | None:
        return self.delivered / self.seconds if self.seconds > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "members": self.members,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.lost,
            "out_of_order": self.out_of_order,
            "seconds": round(self.seconds, 4),
            "deliveries_per_s": None if self.deliveries_per_s is None else round(self.deliveries_per_s, 1),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "failure": self.failure,
        }


def stamp(origin: str, number: int) -> str:
    return json.dumps({"o": origin, "n": number, "t": time.perf_counter()})


def room_url(server: Server, room: str) -> str:
    return f"ws://{LOOPBACK}:{server.port}/rooms/{room}"


async def open_websocket(server: Server, room: str) -> Member:
    ws = await connect(room_url(server, room), open_timeout=OPEN_SECONDS, compression=None, max_size=None)

    async def next_text() -> str:
        return str(await ws.recv())

    return Member("websocket", int(ws.local_address[1]), next_text, ws.close, ws)


async def open_event_stream(server: Server, room: str) -> Member:
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    writer.write(f"GET /rooms/{room}/events HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
    async with asyncio.timeout(OPEN_SECONDS):
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            writer.close()
            raise FanoutError(f"event stream refused: {head.splitlines()[0]!r}")
        await reader.readuntil(b": joined\n\n")  # subscribed

    async def next_text() -> str:
        # Chunked: the chunk-size lines are skipped; each event is one chunk, never split.
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("the event stream ended")
            if line.startswith(b"data: "):
                return str(json.loads(line[6:])["message"])

    async def close() -> None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    return Member("event_stream", int(writer.get_extra_info("sockname")[1]), next_text, close)


def websocket_of(member: Member) -> ClientConnection:
    if member.ws is None:
        raise FanoutError(f"a {member.kind} member cannot publish")
    return member.ws


def connection_owners(server: Server) -> dict[int, int]:
    """Client port -> PID of the worker holding that connection."""
    owners = {}
    for proc in server.worker_processes():
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.laddr and conn.laddr.port == server.port and conn.raddr:
                    owners[conn.raddr.port] = proc.pid
    return owners


async def members_per_worker(server: Server, room: str, per_worker: int, workers: int) -> list[Member]:
    """WebSockets opened until each of the `workers` holds `per_worker` of them; the surplus closed."""
    kept: dict[int, list[Member]] = defaultdict(list)
    surplus: list[Member] = []
    try:
        for _ in range(MAX_OPENS):
            member = await open_websocket(server, room)
            owner = connection_owners(server).get(member.local_port)
            if owner is not None and len(kept[owner]) < per_worker:
                kept[owner].append(member)
            else:
                surplus.append(member)
            if len(kept) == workers and all(len(got) == per_worker for got in kept.values()):
                return [member for got in kept.values() for member in got]
        surplus += [member for got in kept.values() for member in got]
        spread = {pid: len(got) for pid, got in kept.items()}
        raise FanoutError(f"{MAX_OPENS} WebSockets did not give {per_worker} to each worker: {spread}")
    finally:
        for member in surplus:
            await member.close()


async def collect(member: Member, count: int, deadline: float) -> list[Delivery]:
    got: list[Delivery] = []
    with contextlib.suppress(TimeoutError, ConnectionError, WebSocketException, OSError):
        async with asyncio.timeout(deadline - time.monotonic()):
            while len(got) < count:
                text = await member.next_text()
                at = time.perf_counter()
                message = json.loads(text)
                got.append(Delivery(message["o"], message["n"], at - message["t"], at))
    return got


def judge(phase: Phase, first_sent: float, received: list[list[Delivery]]) -> None:
    """Fill in what the members got: counts, one same order, latency percentiles."""
    phase.members = len(received)
    phase.delivered = sum(map(len, received))
    reference = [(d.origin, d.number) for d in max(received, key=len, default=[])]
    for got in received:
        order = [(d.origin, d.number) for d in got]
        in_numbers = all(
            [n for o, n in order if o == origin] == sorted({n for o, n in order if o == origin})
            for origin in {o for o, _ in order}
        )
        if order != reference[: len(order)] or not in_numbers:
            phase.out_of_order += 1
    latencies = [d.latency_s for got in received for d in got]
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100)
        phase.p50_ms, phase.p99_ms = round(cuts[49] * 1000, 3), round(cuts[98] * 1000, 3)
    if phase.delivered:
        phase.seconds = max(d.at for got in received for d in got) - first_sent


async def paced(
    members: list[Member], publisher: ClientConnection, poster: httpx.AsyncClient, *, count: int, rate: float
) -> Phase:
    """`count` messages at `rate`/s, alternately from a member's WebSocket and a `POST` (to the room
    `poster` is based on) on the other instance, answered 202 before the next is sent."""
    phase = Phase(sent=count)
    deadline = time.monotonic() + count / rate + PHASE_SECONDS
    readers = [asyncio.create_task(collect(member, count, deadline)) for member in members]
    started = time.perf_counter()
    try:
        for number in range(count):
            await asyncio.sleep(max(0.0, started + number / rate - time.perf_counter()))
            if number % 2 == 0:
                await publisher.send(stamp("ws", number))
            else:
                answer = await poster.post("messages", json={"message": stamp("http", number)})
                answer.raise_for_status()
    except (httpx.HTTPError, WebSocketException, OSError) as error:
        phase.failure = f"{type(error).__name__}: {error}"
    judge(phase, started, list(await asyncio.gather(*readers)))
    return phase


async def burst(members: list[Member], publisher: ClientConnection, count: int) -> Phase:
    """`count` messages from one member's WebSocket as fast as it sends them."""
    phase = Phase(sent=count)
    deadline = time.monotonic() + PHASE_SECONDS
    readers = [asyncio.create_task(collect(member, count, deadline)) for member in members]
    started = time.perf_counter()
    try:
        for number in range(count):
            await publisher.send(stamp("ws", number))
    except (WebSocketException, OSError) as error:
        phase.failure = f"{type(error).__name__}: {error}"
    judge(phase, started, list(await asyncio.gather(*readers)))
    return phase


async def delivers(sender_at: Server, member_at: Server, room: str) -> bool:
    """A new member on one instance gets what a new member on the other sends."""
    with contextlib.suppress(TimeoutError, WebSocketException, OSError):
        async with (
            connect(room_url(member_at, room), open_timeout=PROBE_SECONDS) as member,
            connect(room_url(sender_at, room), open_timeout=PROBE_SECONDS) as sender,
        ):
            await sender.send("back")
            async with asyncio.timeout(PROBE_SECONDS):
                return await member.recv() == "back"
    return False


async def until_delivers(sender_at: Server, member_at: Server, room: str) -> float | None:
    """Seconds until a room session delivers across the instances; None if not within RECOVERY_SECONDS."""
    started = time.monotonic()
    attempt = 0
    while time.monotonic() - started < RECOVERY_SECONDS:
        attempt += 1
        if await delivers(sender_at, member_at, f"{room}-{attempt}"):
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    return None
