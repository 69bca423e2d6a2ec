"""`python -m bench.inprocess`: microseconds per `GET /`, the app called directly (no server, no socket).

What the app itself costs, without the server's share: bare FastAPI, the service with its
access line off, and the service at the production defaults (JSON logs, access line on,
written to a file as a server's stdout would be). As under load, each event-loop iteration
runs a batch of requests (`--batch`, 32 by default; 1 shows the cost at light load). The apps
are measured in alternation, round after round, and the median round is reported, so one
noisy moment on a shared machine cannot decide a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI

from service.app import create_app
from service.logs import log_config
from service.settings import Settings

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8000),
}


def _bare() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"message": "Hello, ASGI with FastAPI!"}

    return app


def _time_per_request(app: Any, batch: int, requests: int) -> float:
    """Microseconds per request, `batch` requests run per loop iteration."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def run() -> float:
        iterations = max(1, requests // batch)
        started = time.perf_counter()
        for _ in range(iterations):
            await asyncio.gather(*(app(dict(SCOPE), receive, send) for _ in range(batch)))
            await asyncio.sleep(0)  # the iteration ends: what is scheduled once per iteration runs
        return (time.perf_counter() - started) / (iterations * batch) * 1e6

    return asyncio.run(run())


def measure(rounds: int, batch: int, requests: int) -> dict[str, float]:
    production = Settings(env="production", access_log=True)
    quiet = Settings(env="production", access_log=False)
    apps: dict[str, Callable[[], Any]] = {
        "bare FastAPI": _bare,
        "service, access log off": lambda: create_app(quiet),
        "service, production defaults": lambda: create_app(production),
    }
    built = {name: factory() for name, factory in apps.items()}
    samples: dict[str, list[float]] = {name: [] for name in built}
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)  # the lines land in a file, as a server's stdout would
        try:
            logging.config.dictConfig(log_config(production))
            for app in built.values():
                _time_per_request(app, batch, requests // 4)  # warm-up: caches, first-call paths
            for _ in range(rounds):
                for name, app in built.items():
                    samples[name].append(_time_per_request(app, batch, requests))
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="requests per event-loop iteration")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per app per round")
    args = parser.parse_args(argv)
    results = measure(args.rounds, args.batch, args.requests)
    bare = results["bare FastAPI"]
    for name, micros in results.items():
        print(f"{name:<30} {micros:6.1f} µs/request  ({bare / micros:.2f} of bare's rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
