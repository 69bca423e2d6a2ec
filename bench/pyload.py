"""A pure-Python load generator (asyncio, raw sockets, HTTP/1.1 keep-alive) for when wrk is missing.

It competes with the server for the same CPUs and tops out far below wrk: compare its numbers
only with other runs of the same generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.load import REQUEST_TIMEOUT_SECONDS, LoadResult, Workload

MAX_REQUESTS = 5_000_000
_SHUTDOWN_GRACE_SECONDS = 5.0


class ResponseError(Exception):
    pass


@dataclass
class _Tally:
    deadline: float
    remaining: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


class PythonLoad:
    name = "python asyncio (bench/pyload.py)"

    def __init__(self, max_requests: int = MAX_REQUESTS) -> None:
        self.max_requests = max_requests

    def run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(self._run(base_url, workload, duration, connections))

    async def _run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        request = _request_bytes(workload, f"{host}:{port}")
        started = time.monotonic()
        tally = _Tally(deadline=started + duration, remaining=self.max_requests)
        tasks = [asyncio.create_task(_connection(host, port, request, tally)) for _ in range(connections)]
        _, pending = await asyncio.wait(tasks, timeout=duration + _SHUTDOWN_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        elapsed = time.monotonic() - started
        latencies = sorted(tally.latencies)
        return LoadResult(
            requests=len(latencies),
            duration_s=elapsed,
            rps=len(latencies) / elapsed if elapsed > 0 else 0.0,
            p50_ms=_percentile_ms(latencies, 50),
            p99_ms=_percentile_ms(latencies, 99),
            errors=tally.errors,
        )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on Windows
    except ImportError:
        return None
    return uvloop.new_event_loop


def _request_bytes(workload: Workload, host: str) -> bytes:
    head = [f"{workload.method} {workload.path} HTTP/1.1", f"Host: {host}"]
    if workload.body:
        head += ["Content-Type: application/json", f"Content-Length: {len(workload.body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + workload.body


async def _connection(host: str, port: int, request: bytes, tally: _Tally) -> None:
    """One keep-alive connection sending requests back to back; reconnects after an error."""
    while time.monotonic() < tally.deadline and tally.remaining > 0:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, stream = await asyncio.wait_for(
                asyncio.open_connection(host, port), REQUEST_TIMEOUT_SECONDS
            )
            writer = stream
            while time.monotonic() < tally.deadline and tally.remaining > 0:
                tally.remaining -= 1
                sent = time.perf_counter()
                stream.write(request)
                status, keep_alive = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_SECONDS)
                tally.latencies.append(time.perf_counter() - sent)
                if not 200 <= status < 300:
                    tally.errors += 1
                if not keep_alive:
                    break
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ResponseError, ValueError):
            tally.errors += 1
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ResponseError(f"bad status line {status_line!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        await _skip_chunked(reader)
    return int(parts[1]), headers.get("connection") != "close"


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


def _percentile_ms(ordered: list[float], percent: int) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1] * 1000.0
