"""One access line per request, written by the app so it looks the same on every server.

Written by the app's outer layer (service/middleware/edge.py), inside the
trusted-proxy resolution and once the request has its id, so the client
address is the resolved one and the line carries the request id.

With JSON logs (the production default) the line is built here directly: the
fields in a fixed order, encoded by orjson. The edge layer keeps each finished
request's record and hands those of one event-loop iteration to `write` at its
end (service/request_records.py), which builds their lines and writes them
together (service/log_writer.py).
That is the same line `JsonFormatter` makes of a record (service/logs.py), at a
fraction of the cost of a `LogRecord`, filters and a formatter per request. Any
other configuration (console logs, a handler of the operator's) gets a record.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

from service.log_writer import PIPE_BUF
from service.logs import ACCESS_LOGGER, LineHandler, UtcClock, json_line
from service.request_id import request_id_var

if TYPE_CHECKING:
    from service.request_records import Record

# ASGI writes HTTP/1.0 as "1.0"; granian 2.8 writes "1".
_VERSION_SPELLINGS = {"1": "1.0"}


def http_version(scope: Scope) -> str:
    """The request's HTTP version as ASGI spells it, whichever server wrote the scope."""
    version: str = scope.get("http_version", "1.1")
    return _VERSION_SPELLINGS.get(version, version)


__all__ = ["ACCESS_LOGGER", "AccessLog"]

# A path cut to this many characters keeps the line under PIPE_BUF even when every
# character is escaped (6 bytes each, twice: in `path` and in `message`).
LONG_PATH_KEPT = 256
CUT_MARK = "...(cut)"

# This process's id, read once and again in a forked child (os.getpid is a system call).
_process_id = os.getpid()


def _note_process_id() -> None:
    global _process_id  # noqa: PLW0603
    _process_id = os.getpid()


os.register_at_fork(after_in_child=_note_process_id)


class AccessLog:
    def __init__(self, logger: logging.Logger, skip_paths: frozenset[str]) -> None:
        self.logger = logger
        self.skip_paths = skip_paths
        self.clock = UtcClock()

    def _direct_handler(self) -> LineHandler | None:
        """The handler that takes finished JSON lines, when it is the only one a record would reach."""
        if self.logger.filters:
            return None
        handlers: list[logging.Handler] = []
        logger: logging.Logger | None = self.logger
        while logger is not None:  # as Logger.callHandlers walks them
            handlers += logger.handlers
            logger = logger.parent if logger.propagate else None
        if len(handlers) == 1:
            handler = handlers[0]
            if type(handler) is LineHandler and handler.direct_json and handler.level <= logging.INFO:
                return handler
        return None

    def log(
        self,
        scope: Scope,
        status: int,
        seconds: float,
        version: str | None = None,
        ended: float | None = None,
    ) -> None:
        """The access line of an HTTP request; `version` is `http_version(scope)`, if the caller has it,
        `ended` when the request ended (Unix seconds), if that was before now."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        if version is None:
            version = http_version(scope)
        handler = self._direct_handler()
        if handler is None:  # console logs, or a handler of the operator's: a record
            method, path = scope["method"], scope["path"]
            # The duration in the text too: a console line shows only the message.
            text = f'"{method} {_shown(path)} HTTP/{version}" {status} {seconds * 1000:.1f} ms'
            self._through_logging(scope, text, seconds, ended, method=method, path=path, status=status)
            return
        # The values now, the line at the end of the loop iteration (service/log_writer.py).
        values = self._values(
            scope,
            status,
            seconds,
            version,
            request_id=request_id_var.get(),
            ended=time.time() if ended is None else ended,
            server=handler.server,
        )
        handler.add_later(_json_access_line, values)

    def write(self, records: Iterable[Record]) -> None:
        """The access lines of finished requests, in their order (service/request_records.py).

        Called once per event-loop iteration with that iteration's requests: the handler is
        looked up once, and their JSON lines go to the writer together.
        """
        if not self.logger.isEnabledFor(logging.INFO):
            return
        handler = self._direct_handler()
        skip_paths = self.skip_paths
        server = handler.server if handler is not None else "-"
        lines: list[bytes] = []
        for record in records:
            scope, status, seconds, version, ended = record
            if scope["path"] in skip_paths:
                continue
            state = scope["state"]
            events = state.get("events_sent")
            if handler is None or events is not None:  # a record through logging, after the lines before it
                if lines and handler is not None:
                    handler.write_lines(lines)
                    lines = []
                self._logged(record, events)
                continue
            request_id = state.get("request_id", "-")
            values = self._values(
                scope, status, seconds, version, request_id=request_id, ended=ended, server=server
            )
            lines.append(_json_access_line(values))
        if lines and handler is not None:
            handler.write_lines(lines)

    def _values(
        self,
        scope: Scope,
        status: int,
        seconds: float,
        version: str,
        *,
        request_id: str,
        ended: float,
        server: str,
    ) -> tuple[Any, ...]:
        """What `_json_access_line` renders a request's line from."""
        return (
            scope.get("client"),
            scope["method"],
            scope["path"],
            status,
            seconds,
            scope.get("scheme", "http"),
            version,
            request_id,
            ended,
            server,
            self.clock,
        )

    def _logged(self, record: Record, events: int | None) -> None:
        """A request's line through `logging`, its request id in the context as during the request."""
        scope, status, seconds, version, ended = record
        token = request_id_var.set(scope["state"].get("request_id", "-"))  # the filter reads it there
        try:
            if events is None:
                self.log(scope, status, seconds, version, ended)
            else:
                self.stream(scope, status, seconds, events, ended)
        finally:
            request_id_var.reset(token)

    # Long-lived connections (service/session_metrics.py): one line when each ends, same fields plus its own.

    def websocket(self, scope: Scope, close_code: int, seconds: float, received: int, sent: int) -> None:
        """A WebSocket session that was accepted, once it has ended."""
        if scope["path"] in self.skip_paths:
            return
        path = scope["path"]
        self._through_logging(
            scope,
            f'"WEBSOCKET {_shown(path)}" {close_code} {received} in {sent} out',
            seconds,
            None,
            method="WEBSOCKET",
            path=path,
            close_code=close_code,
            messages_in=received,
            messages_out=sent,
        )

    def refused_upgrade(self, scope: Scope, status: int, seconds: float) -> None:
        """A WebSocket upgrade answered with an HTTP status instead (403, 503, ...)."""
        if scope["path"] in self.skip_paths:
            return
        path, version = scope["path"], http_version(scope)
        self._through_logging(
            scope,
            f'"GET {_shown(path)} HTTP/{version}" {status} (websocket upgrade refused)',
            seconds,
            None,
            method="GET",
            path=path,
            status=status,
        )

    def stream(
        self, scope: Scope, status: int, seconds: float, events: int, ended: float | None = None
    ) -> None:
        """An event stream, once it has ended: the HTTP line's fields plus the events sent."""
        method, path, version = scope["method"], scope["path"], http_version(scope)
        self._through_logging(
            scope,
            f'"{method} {_shown(path)} HTTP/{version}" {status} {events} events',
            seconds,
            ended,
            method=method,
            path=path,
            status=status,
            events_sent=events,
        )

    def _through_logging(
        self, scope: Scope, text: str, seconds: float, ended: float | None, **fields: object
    ) -> None:
        # A record through `logging`, whose JSON formatter keeps every field given here
        # (service/logs.py): for the session lines (one per session, not per request) and
        # wherever the direct JSON line does not apply. A line written after its request ended
        # (at the end of the loop iteration, service/request_records.py) carries the time it ended.
        if not self.logger.isEnabledFor(logging.INFO):
            return
        address = _address(scope)
        extra = {
            **fields,
            "duration_ms": round(seconds * 1000, 3),
            "client": address,
            "scheme": scope.get("scheme", "http"),
            "version": http_version(scope),
            "request_id": request_id_var.get(),
        }
        # The record `logger.info` would make, back-dated when the request ended earlier.
        file, line_number, function, _ = self.logger.findCaller()
        line = self.logger.makeRecord(
            self.logger.name,
            logging.INFO,
            file,
            line_number,
            "%s - %s",
            (address, text),
            None,
            function,
            extra,
        )
        if ended is not None:
            earlier = line.created - ended
            line.created = ended
            line.msecs = int((ended - int(ended)) * 1000) + 0.0  # as LogRecord computes it
            line.relativeCreated -= earlier * 1000
        self.logger.handle(line)


def _json_access_line(values: tuple[Any, ...]) -> bytes:
    """The JSON access line: the fields of `JsonFormatter`'s access lines, in its order (service/logs.py)."""
    client, method, path, status, seconds, scheme, version, request_id, timestamp, server, clock = values
    address = f"{client[0]}:{client[1]}" if client else "-"
    fields: dict[str, Any] = {
        "level": "INFO",
        "logger": ACCESS_LOGGER,
        "message": f'{address} - "{method} {path} HTTP/{version}" {status}',
        "pid": _process_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "client": address,
        "scheme": scheme,
        "version": version,
        "request_id": request_id,
        "server": server,
        "time": clock.iso(timestamp),
    }
    line = json_line(fields)
    if len(line) > PIPE_BUF:
        # Only a very long path (or method) gets here: keep the line writable in one piece.
        method, path = method[:32], path[:LONG_PATH_KEPT] + CUT_MARK
        fields["message"] = f'{address} - "{method} {path} HTTP/{version}" {status}'
        fields["method"], fields["path"] = method, path
        line = json_line(fields)
    return line


def _shown(path: str) -> str:
    """The path as a line of text shows it: a control character (a decoded `%0A`, say) escaped, so
    one request stays one line wherever the message is printed as text. JSON escapes it itself."""
    if path.isprintable():
        return path
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in path)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"
