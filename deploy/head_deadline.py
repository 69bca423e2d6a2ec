"""A connection's deadline for its next request head, shared by our two protocols.

deploy/uvicorn_internals.py and deploy/gunicorn_internals.py close a connection
whose request head is not complete in time (a slowloris defence), each at its own
server's hook points. The timer is the same for both and lives here; what differs,
whether the connection may be closed when it fires, stays in each protocol's
expiry callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class HeadDeadline:
    """One timer a connection: armed while it waits for a head, disarmed once the head is in."""

    def __init__(
        self, timeout: float | None, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]
    ) -> None:
        self.timeout = timeout  # None or 0: no deadline (the server's own timers only)
        self._loop = loop
        self._on_expiry = on_expiry
        self._timer: asyncio.TimerHandle | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self) -> None:
        """Give the next head the full timeout, from now."""
        # Restart rather than keep a running timer: the timeout counts from the last wait's start.
        self.disarm()
        if self.timeout:
            self._timer = self._loop.call_later(self.timeout, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        # Cleared first: the callback may decide not to close, and a later arm() starts afresh.
        self._timer = None
        self._on_expiry()
