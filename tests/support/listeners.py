"""Waiting, from a test, for a server's listener to close: the moment its stop has begun."""

from __future__ import annotations

import asyncio
import socket

from devkit.process import LOOPBACK


async def until_listener_closed(port: int, bound: float = 5.0) -> None:
    """Return once a connection to `port` on loopback is refused, or after `bound` seconds (the
    test's own assertion then tells what the server did)."""
    for _ in range(int(bound / 0.01)):
        try:
            probe = socket.create_connection((LOOPBACK, port), timeout=0.1)
        except OSError:
            return  # the stop has begun: the listener is closed
        probe.close()
        await asyncio.sleep(0.01)
