"""One client connection over 127.0.0.1 to an asyncio protocol under test, and reading from it.

Shared by the protocol tests of the request-head deadline (tests/unit/test_head_deadline.py,
tests/unit/test_gunicorn_internals.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

DEADLINE = 0.3  # seconds
LATE = 1.0  # a close this much after the deadline is no longer "at the deadline"
REQUEST = b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@asynccontextmanager
async def connected(
    protocol: Callable[[], asyncio.BaseProtocol],
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One client connection over 127.0.0.1 to a server speaking `protocol`."""
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:]
    )
    return await asyncio.wait_for(reader.readexactly(length), 5)


async def seconds_until_closed(reader: asyncio.StreamReader, since: float) -> float:
    assert await asyncio.wait_for(reader.read(), DEADLINE + LATE + 5) == b""
    return time.monotonic() - since
