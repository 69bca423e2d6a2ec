"""Whoever holds work back to do it once per event-loop iteration, and must do it before a reader looks.

The edge layer keeps each finished request's record until the iteration ends
(service/request_records.py). The log writer asks it for its access lines before it
writes any other line, and the metrics for its requests before a scrape: each keeps
a `HeldBack` of the sources it must flush first.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol


class Source(Protocol):
    def flush(self) -> None: ...


class HeldBack:
    def __init__(self) -> None:
        self._sources: weakref.WeakSet[Source] = weakref.WeakSet()  # an app that is gone holds nothing
        self._lock = threading.Lock()  # an app built on one thread while another flushes

    def add(self, source: Source) -> None:
        with self._lock:
            self._sources.add(source)

    def flush(self) -> None:
        """Each source's `flush()`, outside the lock: a source may write a line, which flushes again."""
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            source.flush()
