"""The long-lived workloads: a WebSocket echo (messages/s, round-trip p50/p99) and an event-stream
fan-out (many open streams, events/s delivered). Driven by this Python client on every generator
(wrk speaks neither); their figures sit in the same table, JSON and chart, `req/s` read as
messages/s or events/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

from websockets.asyncio.client import connect

from bench.load import LoadResult, Workload

WS_MESSAGE = "x" * 64
STREAM_INTERVAL = 0.05  # seconds between one stream's events: STREAMS x 20 events/s offered
STREAMS = 200


def run(base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
    host_port = base_url.removeprefix("http://")
    if workload.kind == "ws":
        return asyncio.run(_websocket_echo(host_port, duration, connections))
    return asyncio.run(_event_fan_out(host_port, duration))


async def _websocket_echo(host_port: str, duration: float, connections: int) -> LoadResult:
    """`connections` sockets, each sending a message and awaiting its echo, for `duration` seconds."""
    round_trips: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration

    async def one() -> None:
        nonlocal errors
        try:
            async with connect(f"ws://{host_port}/ws", open_timeout=10, compression=None) as ws:
                while time.monotonic() < deadline:
                    sent = time.perf_counter()
                    await ws.send(WS_MESSAGE)
                    await asyncio.wait_for(ws.recv(), timeout=5)
                    round_trips.append(time.perf_counter() - sent)
        except Exception:
            errors += 1

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    return _result(len(round_trips), time.monotonic() - started, round_trips, errors)


async def _event_fan_out(host_port: str, duration: float) -> LoadResult:
    """STREAMS open streams at once; events delivered to all of them per second."""
    host, _, port = host_port.partition(":")
    delivered = 0
    errors = 0
    deadline = time.monotonic() + duration

    async def one() -> None:
        nonlocal delivered, errors
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            request = f"GET /events?interval={STREAM_INTERVAL} HTTP/1.1\r\nHost: {host_port}\r\n\r\n"
            writer.write(request.encode())
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            while time.monotonic() < deadline:
                line = await asyncio.wait_for(reader.readline(), timeout=5)
                if not line:  # the stream ended early
                    errors += 1
                    return
                if line.startswith(b"id: "):
                    delivered += 1
        except Exception:
            errors += 1
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(STREAMS)))
    return _result(delivered, time.monotonic() - started, [], errors)


def _result(count: int, seconds: float, samples: list[float], errors: int) -> LoadResult:
    p50 = p99 = None
    if len(samples) >= 2:
        cuts = statistics.quantiles(samples, n=100)
        p50, p99 = cuts[49] * 1000, cuts[98] * 1000
    return LoadResult(count, round(seconds, 3), count / seconds if seconds else 0.0, p50, p99, errors)
