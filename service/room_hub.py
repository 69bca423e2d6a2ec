"""Rooms: a message published to a room reaches every subscriber of it, on every worker sharing the broker.

Each worker holds one subscription per room it has subscribers in (service/brokers.py), and fans
each message out to its own subscribers here. A subscriber (a WebSocket or an event stream) has a
bounded queue: one that reads slower than its room is ended (`TOO_SLOW`) and its backlog dropped,
rather than growing the worker's memory. When the broker is lost, every subscriber is ended with
`BROKER_UNAVAILABLE`, which tells clients to come back (the worker reconnects on its own).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass, field

from service import rooms_metrics

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,63}$")
ROOM_NAME_RULE = "1-64 characters: letters, digits and . _ ~ - (not first)"

# WebSocket close codes (RFC 6455 7.4.1), the reason of an ended subscriber.
TOO_SLOW = 1008  # policy violation: it did not read its room's messages fast enough
SERVICE_RESTART = 1012
BROKER_UNAVAILABLE = 1013  # try again later: the worker reconnects to the broker by itself


class BrokerUnavailableError(Exception):
    """The broker cannot take or deliver messages now; the client should retry later."""


@dataclass(eq=False)
class Subscriber:
    """One WebSocket or event stream in a room: the messages waiting for it, and why it must end."""

    room: str
    kind: str
    limit_bytes: int
    queue: deque[tuple[str, int]] = field(default_factory=deque)
    queued_bytes: int = 0
    end_code: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # a message is queued, or it ended
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, message: str, size: int) -> None:
        """Queue a message; one that does not fit ends this subscriber (one always fits an empty queue)."""
        if self.end_code is not None:
            return
        if self.queue and self.queued_bytes + size > self.limit_bytes:
            rooms_metrics.dropped("too_slow", 1)
            self.end(TOO_SLOW)
            return
        self.queue.append((message, size))
        self.queued_bytes += size
        self.ready.set()

    def end(self, code: int) -> None:
        """End it (the first reason wins): what is still queued is dropped, its sender closes with `code`."""
        if self.end_code is not None:
            return
        self.end_code = code
        reason = {TOO_SLOW: "too_slow", BROKER_UNAVAILABLE: "broker_lost"}.get(code, "closed")
        rooms_metrics.dropped(reason, len(self.queue))
        self.queue.clear()
        self.queued_bytes = 0
        self.ready.set()
        self.ended.set()

    async def next_message(self) -> str | None:
        """The next message, waiting for it; None once the subscriber is ended."""
        while not self.queue and self.end_code is None:
            self.ready.clear()
            await self.ready.wait()
        if self.end_code is not None:
            return None
        message, size = self.queue.popleft()
        self.queued_bytes -= size
        return message


class RoomHub:
    """This worker's subscribers, by room."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[Subscriber]] = {}

    def add(self, subscriber: Subscriber) -> bool:
        """Add it; True when it is the room's first here (the worker must subscribe to the room)."""
        members = self.rooms.setdefault(subscriber.room, set())
        members.add(subscriber)
        rooms_metrics.subscribers(subscriber.kind).inc()
        return len(members) == 1

    def remove(self, subscriber: Subscriber) -> bool:
        """Remove it; True when the room has no subscriber left here."""
        members = self.rooms.get(subscriber.room)
        if members is None or subscriber not in members:
            return False
        members.discard(subscriber)
        rooms_metrics.subscribers(subscriber.kind).dec()
        if members:
            return False
        del self.rooms[subscriber.room]
        return True

    def deliver(self, room: str, message: str) -> None:
        members = self.rooms.get(room)
        if members:
            size = len(message.encode())
            for subscriber in members:
                subscriber.offer(message, size)

    def end_all(self, code: int) -> None:
        """End every subscriber, and forget them: the rooms are subscribed afresh by who joins next."""
        rooms, self.rooms = self.rooms, {}
        for members in rooms.values():
            for subscriber in members:
                subscriber.end(code)
                rooms_metrics.subscribers(subscriber.kind).dec()
