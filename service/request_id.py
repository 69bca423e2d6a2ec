"""Request ids: one for every request, on every response, and with an unhandled error's log line.

An incoming `X-Request-ID` is kept when it is well-formed (a proxy or the caller
already assigned one), so one id follows the request through every hop;
anything else is replaced, never echoed, since it lands in logs and headers.
The app sees it in `request.state.request_id` and in `request_id_var`.
Applied by the app's outer layer, service/middleware/edge.py.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from contextvars import ContextVar

HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"^[A-Za-z0-9._:-]{8,128}$")

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
logger = logging.getLogger("service.errors")

# Fresh ids are 128 bits from os.urandom, drawn for 256 requests at a time. os.urandom
# releases the GIL around its getrandom() call; where another thread waits for the GIL
# (granian's, which hands requests to the event loop) that costs a thread switch, and
# paid once per request it cost granian about a tenth of its throughput.
_IDS_PER_DRAW = 256
_fresh_ids: deque[str] = deque()
# A forked worker must not hand out the ids its parent drew.
os.register_at_fork(after_in_child=_fresh_ids.clear)


def new_id() -> str:
    try:
        return _fresh_ids.popleft()  # atomic: no id is ever handed out twice
    except IndexError:
        drawn = os.urandom(16 * _IDS_PER_DRAW).hex()
        _fresh_ids.extend(drawn[start : start + 32] for start in range(0, len(drawn), 32))
        return _fresh_ids.popleft()


def incoming_or_new(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == HEADER and _WELL_FORMED.match(value):
            return value.decode("ascii")
    return new_id()
