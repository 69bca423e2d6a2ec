"""The rooms' brokers: in this process (`memory://`), or Redis/Valkey pub/sub (`redis://`, `rediss://`).

One broker per worker (app.state.rooms), opened and closed by the lifespan. A Redis broker keeps
one pub/sub connection, subscribed to the rooms this worker has subscribers in, and reads it in
one task: messages reach the worker's subscribers in the order Redis received them. When that
connection is lost, every room session here is ended with 1013 (its messages may be missing
now: pub/sub keeps no history) and the broker reconnects with exponential backoff and
jitter. Start-up does not wait for Redis, and readiness does not depend on it (docs/rooms.md).
"""

from __future__ import annotations

import logging

from service import rooms_metrics
from service.room_hub import BROKER_UNAVAILABLE, BrokerUnavailableError, RoomHub, Subscriber
from service.settings import Settings

logger = logging.getLogger(__name__)


class Broker:
    """This worker's rooms: its subscribers (`hub`), and the broker between workers."""

    def __init__(self, unavailable: str | None = None) -> None:
        self.hub = RoomHub()
        # Rooms cannot work with this configuration (the default broker with several workers).
        self.unavailable = unavailable
        self.subscriber_limit_bytes = 1_048_576

    def subscriber(self, room: str, kind: str) -> Subscriber:
        return Subscriber(room, kind, self.subscriber_limit_bytes)

    @property
    def connected(self) -> bool:
        return self.unavailable is None

    async def start(self) -> None:
        rooms_metrics.broker_connected(self.connected)

    async def stop(self) -> None:
        self.hub.end_all(BROKER_UNAVAILABLE)

    async def join(self, subscriber: Subscriber) -> None:
        """Add a subscriber; return once the room's messages reach it, or raise BrokerUnavailableError."""
        if not self.connected:
            raise BrokerUnavailableError(self.unavailable or "the broker is unavailable")
        first = self.hub.add(subscriber)
        try:
            await self._subscribed(subscriber.room, first)
        except BrokerUnavailableError:
            await self.leave(subscriber)
            raise

    async def leave(self, subscriber: Subscriber) -> None:
        if self.hub.remove(subscriber):
            await self._unsubscribe(subscriber.room)

    async def publish(self, room: str, message: str, via: str) -> None:
        """Return once the broker has the message, or raise BrokerUnavailableError."""
        if not self.connected:
            raise BrokerUnavailableError(self.unavailable or "the broker is unavailable")
        await self._publish(room, message)
        rooms_metrics.published(via).inc()

    async def _subscribed(self, room: str, first: bool) -> None:
        pass

    async def _unsubscribe(self, room: str) -> None:
        pass

    async def _publish(self, room: str, message: str) -> None:
        self.hub.deliver(room, message)  # one process, one loop: the call order is the broker's order


def broker_for(settings: Settings) -> Broker:
    broker = _broker_for(settings)
    broker.subscriber_limit_bytes = settings.rooms_subscriber_buffer_bytes
    return broker


def _broker_for(settings: Settings) -> Broker:
    url = settings.broker_url
    if url is None and settings.workers > 1:
        return Broker(
            unavailable=f"rooms need a shared broker with APP_WORKERS={settings.workers}: set APP_BROKER_URL"
        )
    if url is None or url == "memory://":
        return Broker()
    password = settings.broker_password.get_secret_value() if settings.broker_password else None
    # Imported only when configured: redis-py brings its own imports (OpenTelemetry's SDK among
    # them) and several MiB into every worker that would never use it.
    from service.redis_broker import RedisBroker  # noqa: PLC0415

    return RedisBroker(url, password)
