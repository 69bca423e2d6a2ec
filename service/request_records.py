"""What the edge layer keeps of each finished HTTP request: its metrics and its access line, in one batch.

A request that ends appends one record (its scope, status, duration, HTTP version and end time);
the first record of an event-loop iteration schedules `flush` with `call_soon`. The flush turns
the iteration's records into the request metrics (service/multiprocess_metrics.py) and the
access lines (service/access_log.py) in one pass. Under load one iteration ends dozens of
requests: each of them pays for an append, and the series lookups, the access log's handler
check and the writer's queue are paid once per iteration, off the requests' own path.

Nothing is lost, late or out of order:
- a scrape, `multiprocess_metrics.flush()` and the app's lifespan shutdown flush the records
  first, so `/metrics` counts every request that has ended;
- a line written at once (an error, a server message) first takes the access lines recorded
  before it (`log_writer.held_back`), so stdout keeps the order in which things happened;
- an event stream (long-lived, service/sessions.py) is recorded by the edge itself when it ends.
"""

from __future__ import annotations

import asyncio
import threading

from starlette.types import Scope

from service import log_writer, multiprocess_metrics
from service.access_log import AccessLog
from service.middleware.counted_marker import COUNTED
from service.middleware.session_records import route_of
from service.multiprocess_metrics import in_progress, method_label, protocol_count, request_series

# scope, status, seconds, HTTP version (as ASGI spells it), end time (Unix seconds)
Record = tuple[Scope, int, float, str, float]


class RequestRecords:
    def __init__(self, access_log: AccessLog | None, *, metrics: bool, count_marked_only: bool) -> None:
        self.access_log = access_log
        self.metrics = metrics
        self.count_marked_only = count_marked_only  # see service/middleware/counted_marker.py
        self._records: list[Record] = []
        self._flush_scheduled_on: asyncio.AbstractEventLoop | None = None
        # Requests end on the event loop's thread; a scrape or a test may flush from another.
        self._lock = threading.Lock()
        if metrics:
            multiprocess_metrics.held_back.add(self)
        if access_log is not None:
            log_writer.held_back.add(self)

    def add(self, record: Record) -> None:
        """Keep a finished request's record; it is written at the end of this event-loop iteration."""
        with self._lock:
            self._records.append(record)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # outside any event loop (a test calling the app by hand)
                loop = None
            if loop is not None and self._flush_scheduled_on is loop:
                return
            self._flush_scheduled_on = loop
        if loop is None:
            self.flush()
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Record the metrics and write the access lines of every request kept so far."""
        with self._lock:
            records, self._records = self._records, []
            self._flush_scheduled_on = None
        if not records:
            return
        if self.metrics:
            self._record_metrics(records)
        if self.access_log is not None:
            self.access_log.write(records)

    def _record_metrics(self, records: list[Record]) -> None:
        with multiprocess_metrics.lock:
            for scope, status, seconds, version, _ in records:
                method = method_label(scope["method"])
                in_progress(method).record(-1)
                if self.count_marked_only and not scope["state"].get(COUNTED, False):
                    continue  # answered by the Host allow-list or CORS, not by the app
                request_series(method, route_of(scope), status).record(seconds)
                protocol_count(scope.get("scheme", "http"), version).record()
        multiprocess_metrics.write_changed()
