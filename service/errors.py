"""Every error leaves as JSON, and nothing a client sends turns into a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

logger = logging.getLogger("service.errors")


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log once; the client learns nothing about internals.
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI already answers 404/405/422 as JSON; this covers the unexpected rest."""
    app.add_exception_handler(Exception, _unhandled)
