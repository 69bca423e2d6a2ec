"""The access line a server wrote for one request, read from its log (JSON logs)."""

from __future__ import annotations

import json
from typing import Any

from devkit.process import ServerProcess


def access_line(server: ServerProcess, request_id: str) -> dict[str, Any] | None:
    for line in server.log().splitlines():
        if request_id in line and line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            if record.get("logger") == "service.access" and record.get("request_id") == request_id:
                return record
    return None
