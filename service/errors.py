"""Every error leaves as JSON, and nothing a client sends turns into a 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # The client learns nothing about internals. The traceback is logged once, with
    # the request id, by RequestIdMiddleware, which sees the exception re-raised.
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI already answers 404/405/422 as JSON; this covers the unexpected rest."""
    app.add_exception_handler(Exception, _unhandled)
