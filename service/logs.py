"""One logging configuration for the app and every server.

Each adapter hands this same `dictConfig` to its server (uvicorn `log_config`,
hypercorn and gunicorn `logconfig_dict`, granian `log_dictconfig`), so server
messages, app messages and access lines share one format. The servers' own
access logs are always off: the app writes the access line itself
(service/middleware/access_log.py), so its fields are the same everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

from service.middleware.request_id import request_id_var
from service.settings import Settings

# Loggers the servers write their own messages to.
SERVER_LOGGERS = ("uvicorn", "hypercorn.error", "gunicorn.error", "_granian")
# Their access loggers, silenced: the app logs access itself.
SERVER_ACCESS_LOGGERS = ("uvicorn.access", "hypercorn.access", "gunicorn.access", "granian.access")


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


def log_config(settings: Settings) -> dict[str, Any]:
    level = settings.log_level.upper()
    formatters: dict[str, Any] = {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(process)d",
            "rename_fields": {"levelname": "level", "name": "logger", "process": "pid"},
            "timestamp": "time",
        },
        "console": {
            "format": "%(asctime)s %(levelname)-7s [%(process)d] %(name)s [%(request_id)s] %(message)s",
        },
    }
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
        "formatter": settings.effective_log_format,
        "filters": ["request_context"],
    }
    loggers: dict[str, Any] = {
        name: {"handlers": ["default"], "level": level, "propagate": False}
        for name in ("service", *SERVER_LOGGERS)
    }
    loggers.update(
        {name: {"handlers": [], "level": "CRITICAL", "propagate": False} for name in SERVER_ACCESS_LOGGERS}
    )
    # Granian's configure_logging sets this one's level itself; keep ours in step.
    loggers["granian"] = {"handlers": ["default"], "level": level, "propagate": False}
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
