"""One logging configuration for the app and every server.

Each adapter hands this same `dictConfig` to its server (uvicorn `log_config`,
hypercorn and gunicorn `logconfig_dict`, granian `log_dictconfig`), so server
messages, app messages and access lines share one format. The servers' own
access logs are always off: the app writes the access line itself
(service/access_log.py), so its fields are the same everywhere.

Every line goes through `LineHandler` to the process's `LineWriter` for stdout
(service/log_writer.py): whole lines, in order, never mixed with another worker's.
A JSON line carries the documented fields only (`JSON_FIELDS`, plus `exc_info` and
`stack_info` when there is one); the extras a server adds for itself, such as
uvicorn's ANSI-coloured `color_message`, are left out. Access lines carry theirs
(`ACCESS_FIELDS`, and any other field the access log passes); the access logger
builds them without a `LogRecord` when this handler and formatter are the ones
configured.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from service.log_writer import LineWriter, writer_for
from service.request_id import request_id_var
from service.settings import Settings


@dataclass(frozen=True)
class ServerLoggers:
    """The loggers a server writes to (each profile declares its own: deploy/profile.py)."""

    messages: tuple[str, ...] = ()  # its own messages: configured as the app's
    access: tuple[str, ...] = ()  # its access lines: silenced, the app writes access lines itself


NO_SERVER = ServerLoggers()  # the app alone (tests, the in-process bench)


class RequestContextFilter(logging.Filter):
    """Stamp every record with the request id of the request it belongs to, and the server profile."""

    def __init__(self, server: str = "-") -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        record.server = self.server
        return True


ACCESS_LOGGER = "service.access"
# The fields of every JSON line, in this order; access lines add ACCESS_FIELDS after `pid`.
JSON_FIELDS = ("level", "logger", "message", "pid", "request_id", "server", "time")
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "client", "scheme", "version")


class UtcClock:
    """ISO 8601 UTC timestamps with microseconds; the date and time part is formatted once a second."""

    def __init__(self) -> None:
        self._second_and_prefix = (-1, "")  # one tuple: a reader never sees one without the other

    def iso(self, timestamp: float) -> str:
        second = int(timestamp)
        cached_second, prefix = self._second_and_prefix
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second_and_prefix = (second, prefix)
        return f"{prefix}.{int((timestamp - second) * 1e6):06d}+00:00"


def json_line(fields: dict[str, Any]) -> bytes:
    """One JSON object and its newline. A string orjson refuses (a lone surrogate) is escaped instead."""
    try:
        return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return json.dumps(fields, ensure_ascii=True, separators=(",", ":"), default=str).encode() + b"\n"


# What a LogRecord has of its own, and what the filter stamps: not fields of an access line.
_NOT_ACCESS_FIELDS = frozenset(
    {
        *vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)),
        "message",
        "asctime",
        "taskName",
        "request_id",
        "server",
        "color_message",
    }
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record with the documented fields only (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = UtcClock()

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.name == ACCESS_LOGGER:
            fields.update({name: getattr(record, name, None) for name in ACCESS_FIELDS})
            # Any further field an access record brings is the access log's own, documented there.
            fields.update(
                {name: value for name, value in vars(record).items() if name not in _NOT_ACCESS_FIELDS}
            )
        fields["request_id"] = getattr(record, "request_id", "-")
        fields["server"] = getattr(record, "server", "-")
        fields["time"] = self.clock.iso(record.created)
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc_info"] = record.exc_text
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        return json_line(fields)[:-1].decode()


class LineHandler(logging.Handler):
    """Each record as one whole line through the stream's `LineWriter` (service/log_writer.py).

    A stream without a file descriptor (a test's captured stdout) is written to directly.
    `direct_json` says whether a caller may hand it finished JSON lines (`add_line`): its
    formatter is `JsonFormatter` and its only filter stamps the request id and the server.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.writer: LineWriter | None
        try:
            self.writer = writer_for(stream.fileno())
        except (AttributeError, OSError, io.UnsupportedOperation):
            self.writer = None
        self.direct_json = False
        self.server = "-"

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 - logging's name
        super().setFormatter(fmt)
        self._update_direct_json()

    def addFilter(self, filter: Any) -> None:  # noqa: N802 - logging's names
        super().addFilter(filter)
        self._update_direct_json()

    def removeFilter(self, filter: Any) -> None:  # noqa: N802 - logging's names
        super().removeFilter(filter)
        self._update_direct_json()

    def _update_direct_json(self) -> None:
        stampers = [f for f in self.filters if isinstance(f, RequestContextFilter)]
        self.server = stampers[0].server if stampers else "-"
        self.direct_json = isinstance(self.formatter, JsonFormatter) and len(stampers) == len(self.filters)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode("utf-8", "backslashreplace") + b"\n"
            if self.writer is not None:
                self.writer.write_now(line)
            else:
                self.stream.write(line.decode())
                self.stream.flush()
        except Exception:
            self.handleError(record)

    def add_line(self, line: bytes) -> None:
        """A finished line (bytes, newline included), written with the next batch."""
        if self.writer is not None:
            self.writer.add(line)
        else:
            self.stream.write(line.decode())
            self.stream.flush()

    def write_lines(self, lines: list[bytes]) -> None:
        """Finished lines (bytes, newline included), written now after what is queued."""
        if self.writer is not None:
            self.writer.write_lines(lines)
        else:
            self.stream.write(b"".join(lines).decode())
            self.stream.flush()

    def add_later(self, render: Callable[[Any], bytes], values: Any) -> None:
        """The finished line `render(values)` makes, rendered and written with the next batch."""
        if self.writer is not None:
            self.writer.add_later(render, values)
        else:
            self.add_line(render(values))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()


def log_config(settings: Settings, server: ServerLoggers = NO_SERVER) -> dict[str, Any]:
    level = settings.log_level.upper()
    formatters: dict[str, Any] = {
        "json": {"()": "service.logs.JsonFormatter"},
        "console": {
            "format": "%(asctime)s %(levelname)-7s [%(process)d] %(name)s [%(request_id)s] %(message)s",
        },
    }
    handler = {
        "class": "service.logs.LineHandler",
        "stream": "ext://sys.stdout",
        "formatter": settings.effective_log_format,
        "filters": ["request_context"],
    }
    loggers: dict[str, Any] = {
        name: {"handlers": ["default"], "level": level, "propagate": False}
        for name in ("service", *server.messages)
    }
    loggers.update(
        {name: {"handlers": [], "level": "CRITICAL", "propagate": False} for name in server.access}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_context": {"()": "service.logs.RequestContextFilter", "server": settings.server}
        },
        "formatters": {settings.effective_log_format: formatters[settings.effective_log_format]},
        "handlers": {"default": handler},
        "loggers": loggers,
        "root": {"handlers": ["default"], "level": level},
    }
