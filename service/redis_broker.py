"""The Redis/Valkey pub/sub broker of the rooms (`redis://`, `rediss://`); service/brokers.py has the rest.

Imported only when APP_BROKER_URL names Redis: redis-py is not loaded by a worker that never uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service import rooms_metrics
from service.brokers import Broker
from service.room_hub import BROKER_UNAVAILABLE, BrokerUnavailableError

logger = logging.getLogger("service.brokers")

CHANNEL_PREFIX = "asgi-deploy:rooms:"
# Always subscribed: the connection is made by it, and stays in the subscribed state, where
# redis-py never reads a reply behind the reading task's back.
CONTROL_CHANNEL = "asgi-deploy:control"
SUBSCRIBE_TIMEOUT = 5.0
READ_TIMEOUT = 1.0  # how often the reading task looks up from an idle connection
COMMAND_TIMEOUT = 5.0
HEALTH_CHECK_SECONDS = 5  # an idle pub/sub connection is pinged this often: a dead peer is found
BACKOFF_FIRST, BACKOFF_CAP = 0.2, 5.0


class RedisBroker(Broker):
    def __init__(self, url: str, password: str | None) -> None:
        super().__init__()
        self.url = url
        self.password = password
        self.pubsub: PubSub | None = None
        self.publisher: Redis | None = None
        self.up = False
        # Subscriptions sent, not yet confirmed: a room's subscribers wait for its confirmation.
        self.confirmations: dict[str, asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.up

    def _client(self) -> Redis:
        # No retry inside redis-py: a lost connection is this broker's to handle, visibly.
        return Redis.from_url(
            self.url,
            password=self.password,
            decode_responses=True,
            socket_connect_timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            socket_keepalive=True,
            health_check_interval=HEALTH_CHECK_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )

    async def start(self) -> None:
        rooms_metrics.broker_connected(False)
        self.publisher = self._client()
        self.task = asyncio.get_running_loop().create_task(self._stay_connected())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self._lost()
        if self.publisher is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.publisher.aclose()

    async def _stay_connected(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            client = self._client()
            started = asyncio.get_running_loop().time()
            try:
                await self._read(client)
            except (RedisError, OSError) as error:
                if self.up:
                    logger.warning("rooms: lost the broker (%s); reconnecting", type(error).__name__)
            finally:
                self._lost()
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
            if asyncio.get_running_loop().time() - started > BACKOFF_CAP:
                delay = BACKOFF_FIRST  # it had been up a while: this is a new outage
            # Jitter: the workers of every pod do not reconnect in step.
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 2, BACKOFF_CAP)

    async def _read(self, client: Redis) -> None:
        pubsub = client.pubsub()
        self.pubsub = pubsub
        await pubsub.subscribe(CONTROL_CHANNEL)
        while True:
            message = await pubsub.get_message(timeout=READ_TIMEOUT)
            if message is None:
                continue
            kind, channel = message["type"], message["channel"]
            if kind == "message":
                self.hub.deliver(channel.removeprefix(CHANNEL_PREFIX), message["data"])
            elif kind == "subscribe" and channel == CONTROL_CHANNEL:
                self.up = True
                rooms_metrics.broker_connected(True)
                logger.info("rooms: broker connected")
            elif kind == "subscribe":
                waiter = self.confirmations.pop(channel, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _lost(self) -> None:
        was_up, self.up, self.pubsub = self.up, False, None
        if was_up:
            rooms_metrics.broker_connected(False)
        for waiter in self.confirmations.values():
            if not waiter.done():
                waiter.set_exception(BrokerUnavailableError("the broker connection was lost"))
        self.confirmations.clear()
        self.hub.end_all(BROKER_UNAVAILABLE)

    async def _subscribed(self, room: str, first: bool) -> None:
        channel = CHANNEL_PREFIX + room
        if first:
            if self.pubsub is None:
                raise BrokerUnavailableError("the broker is unavailable")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiter.add_done_callback(_retrieved)
            self.confirmations[channel] = waiter
            try:
                await self.pubsub.subscribe(channel)
            except (RedisError, OSError):
                raise BrokerUnavailableError("the broker did not take the subscription") from None
        else:
            found = self.confirmations.get(channel)
            if found is None:
                return  # subscribed already
            waiter = found
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.shield(waiter)
        except TimeoutError:
            raise BrokerUnavailableError("the broker did not confirm the subscription") from None

    async def _unsubscribe(self, room: str) -> None:
        if self.pubsub is not None and self.up:
            with contextlib.suppress(RedisError, OSError):
                await self.pubsub.unsubscribe(CHANNEL_PREFIX + room)

    async def _publish(self, room: str, message: str) -> None:
        if self.publisher is None:
            raise BrokerUnavailableError("the broker is unavailable")
        try:
            await self.publisher.publish(CHANNEL_PREFIX + room, message)
        except (RedisError, OSError):
            raise BrokerUnavailableError("the broker did not take the message") from None


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # seen: no "exception was never retrieved" when nobody waits any more
