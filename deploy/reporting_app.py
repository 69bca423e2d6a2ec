"""The ASGI app as a worker of deploy/supervisor.py serves it, telling the supervisor through ASGI alone.

A server run through its public entry point (hypercorn's `serve()`) reports nothing to our
supervisor; this wrapper does, from what every ASGI server does with the app:

- READY once the app's lifespan start-up is complete (or the app turned out to have no
  lifespan), and the server has had a moment to start accepting: it serves right after;
- the heartbeat, from a task of the worker's event loop, from the lifespan call on;
- RETIRING, once, when a request passes the worker's limit (each http or websocket call is
  one): the worker serves on, and the supervisor stops it once its replacement is ready.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any

from deploy.heartbeat_files import ASGIApp, Message, Receive, Scope, Send
from deploy.supervisor import READY, RETIRING, WorkerLink
from deploy.worker_timing import ACCEPTING_SETTLE_SECONDS, HEARTBEAT_SECONDS


def recycle_after(max_requests: int | None, jitter: int) -> int | None:
    """This worker's request limit: the setting plus its own random share of the jitter."""
    if not max_requests:
        return None
    return max_requests + random.randint(0, jitter)  # noqa: S311 - not a secret


class ReportingApp:
    def __init__(self, app: ASGIApp, link: WorkerLink, recycle_after: int | None) -> None:
        self.app = app
        self.link = link
        self.recycle_after = recycle_after
        self.requests = 0
        self.retiring = False
        self.tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        self._count()
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._spawn(self._beat())
        started: list[str] = []  # the app's start-up message, once it sends one

        async def noting_startup(message: Message) -> None:
            if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                started.append(message["type"])
                if message["type"] == "lifespan.startup.complete":
                    self._spawn(self._report_ready())
            await send(message)

        try:
            await self.app(scope, receive, noting_startup)
        finally:
            if not started:  # no lifespan support: the server serves without one
                self._spawn(self._report_ready())

    async def _report_ready(self) -> None:
        await asyncio.sleep(ACCEPTING_SETTLE_SECONDS)
        self.link.report(READY)

    async def _beat(self) -> None:
        while True:
            self.link.beat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def _count(self) -> None:
        if self.recycle_after is None or self.retiring:
            return
        self.requests += 1
        if self.requests > self.recycle_after:
            self.retiring = True
            self.link.report(RETIRING)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
