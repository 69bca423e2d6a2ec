"""A real Redis for the rooms' tests (devkit/redis.py), or a skip where `redis-server` is not installed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from devkit.redis import RedisServer
from tests.support.tools import require_tools

__all__ = ["RedisServer", "running_redis"]


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """A started redis-server, or a skip (a failure under CI=true) where it is not installed."""
    binary = require_tools("redis-server", install="apt-get install redis-server")["redis-server"]
    server = RedisServer(binary, directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
