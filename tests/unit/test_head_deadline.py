"""The request-head timer both protocols share (deploy/head_deadline.py), on a real event loop.

tests/unit/test_gunicorn_internals.py checks it through gunicorn's ASGI protocol and
tests/unit/test_uvicorn_internals.py through uvicorn's (tests/resilience/test_limits.py checks
both through real server processes).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from deploy.head_deadline import HeadDeadline
from devkit.connections import (
    DEADLINE,
    LATE,
)


class _Expiries:
    """The expiry callback: when it ran, and whether the deadline still looked armed then."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.armed_during_callback: list[bool] = []
        self.deadline: HeadDeadline | None = None

    def __call__(self) -> None:
        self.at.append(time.monotonic())
        assert self.deadline is not None
        self.armed_during_callback.append(self.deadline.armed)


def deadline_with(timeout: float | None) -> tuple[HeadDeadline, _Expiries]:
    expiries = _Expiries()
    expiries.deadline = HeadDeadline(timeout, asyncio.get_running_loop(), expiries)
    return expiries.deadline, expiries


@pytest.mark.anyio
async def test_armed_deadline_expires_once_at_the_timeout() -> None:
    deadline, expiries = deadline_with(DEADLINE)
    start = time.monotonic()
    deadline.arm()
    assert deadline.armed
    await asyncio.sleep(DEADLINE + 0.3)
    assert len(expiries.at) == 1
    assert DEADLINE - 0.05 <= expiries.at[0] - start < DEADLINE + LATE
    # Disarmed before the callback runs: a callback that keeps the connection may arm it again.
    assert expiries.armed_during_callback == [False]
    assert not deadline.armed


@pytest.mark.anyio
async def test_disarmed_deadline_never_expires() -> None:
    deadline, expiries = deadline_with(DEADLINE)
    deadline.arm()
    deadline.disarm()
    assert not deadline.armed
    deadline.disarm()  # a lost connection disarms whatever state it is in
    await asyncio.sleep(DEADLINE + 0.3)
    assert expiries.at == []


@pytest.mark.anyio
async def test_arming_again_restarts_the_countdown() -> None:
    timeout = 1.0  # 0.4 s of slack for each sleep below on a busy machine
    deadline, expiries = deadline_with(timeout)
    deadline.arm()
    await asyncio.sleep(timeout * 0.6)
    rearmed = time.monotonic()
    deadline.arm()  # each wait for a head gets the whole timeout
    await asyncio.sleep(timeout * 0.6)  # past the first arm's deadline
    assert expiries.at == []
    await asyncio.sleep(timeout + 0.3)
    assert len(expiries.at) == 1  # the first timer was cancelled, not left to fire as well
    assert timeout - 0.05 <= expiries.at[0] - rearmed < timeout + LATE


@pytest.mark.anyio
@pytest.mark.parametrize("no_timeout", [None, 0])
async def test_no_timeout_means_no_deadline(no_timeout: float | None) -> None:
    deadline, expiries = deadline_with(no_timeout)
    deadline.arm()
    assert not deadline.armed
    await asyncio.sleep(0.05)
    assert expiries.at == []
