"""The drain window: between SIGTERM and the graceful stop, tell clients to move off.

The launcher (deploy/drain_front.py) creates a file when SIGTERM arrives; every
worker watches for it, and from then on `/readyz` answers 503 and every
response carries `Connection: close`, while requests, including those on new
connections, are still served. A file works across every server's worker model
(forked, spawned, Rust-managed) without any server's cooperation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

DRAIN_FILE_POLL_SECONDS = 0.1


class DrainState:
    def __init__(self) -> None:
        self.draining = False


@contextlib.asynccontextmanager
async def watch(flag: Path | None, state: DrainState) -> AsyncIterator[None]:
    """Run a watcher for the flag file for as long as the app runs."""
    if flag is None:
        yield
        return

    async def poll() -> None:
        # A file has no change event to await; one stat() a poll is cheaper than a thread hop.
        while not flag.exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(DRAIN_FILE_POLL_SECONDS)
        state.draining = True

    task = asyncio.create_task(poll())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
