"""The rooms' metrics (docs/rooms.md), next to the other long-lived connection series.

- `rooms_messages_published_total{via}`: taken by the broker, from a WebSocket or `POST`;
- `rooms_messages_delivered_total{kind}`: written to a subscriber (`websocket`, `event_stream`);
- `rooms_messages_dropped_total{reason}`: queued for a subscriber that ended before it was written
  (`too_slow`, `broker_lost`, `closed`);
- `rooms_subscribers{kind, pid}`: subscribers per worker now;
- `rooms_broker_connected{pid}`: 1 while the worker's broker subscription is up.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge

from service.multiprocess_metrics import BatchedCounter

PUBLISHED = Counter("rooms_messages_published", "Room messages the broker took.", ("via",))
DELIVERED = Counter("rooms_messages_delivered", "Room messages written to a subscriber.", ("kind",))
DROPPED = Counter(
    "rooms_messages_dropped", "Room messages dropped for a subscriber that ended first.", ("reason",)
)
SUBSCRIBERS = Gauge(
    "rooms_subscribers", "Room subscribers of this worker now.", ("kind",), multiprocess_mode="liveall"
)
BROKER_CONNECTED = Gauge(
    "rooms_broker_connected",
    "1 while this worker's broker subscription is up, else 0.",
    multiprocess_mode="liveall",
)


# Counted per message (per subscriber, for deliveries): written once per event-loop iteration
# (service/multiprocess_metrics.py).
@functools.cache
def published(via: str) -> BatchedCounter:
    return BatchedCounter(PUBLISHED.labels(via))


@functools.cache
def delivered(kind: str) -> BatchedCounter:
    return BatchedCounter(DELIVERED.labels(kind))


@functools.cache
def subscribers(kind: str) -> Any:
    return SUBSCRIBERS.labels(kind)


def dropped(reason: str, count: int) -> None:
    if count:
        DROPPED.labels(reason).inc(count)


def broker_connected(up: bool) -> None:
    BROKER_CONNECTED.set(1 if up else 0)
