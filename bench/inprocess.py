"""`python -m bench.inprocess`: microseconds per request, the app called directly (no server, no socket).

What the app itself costs, without the server's share, on `GET /` and `POST /echo` (a validated
JSON body), with the same route code on every side, and per message of the WebSocket echo `/ws`
(64-byte text messages; bare FastAPI's echo is bench/bare_websocket.py): bare FastAPI, the
service with each of its optional layers off, then the metrics on, then the access line too (the
production defaults: JSON logs, written to a file as a server's stdout would be). The differences
are the cost of each layer in microseconds per request (per message). As under load, each
event-loop iteration runs a batch of requests (`--batch`, 32 by default; 1 shows the cost at light
load), and has one message of each of as many WebSocket sessions. The apps are measured in
alternation, round after round, and the median round is reported, so one noisy moment on a shared
machine cannot decide a figure; the time is this process's CPU time, so other processes' load does
not count in it.

The measurement runs in a fresh interpreter whose metrics are prometheus-client's multiprocess
files, as in a server's worker (the launcher sets `PROMETHEUS_MULTIPROC_DIR` before the library
is imported: it picks its storage then): in memory, a metric's write would cost less than it does
in production. Its garbage collector is settled as a server's worker's is (deploy/worker_gc.py).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging.config
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from bench.bare_websocket import websocket_echo
from deploy import worker_gc
from service.api import echo, root
from service.app import TELEMETRY_OFF, create_app
from service.logs import log_config
from service.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]
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


ECHO_BODY = json.dumps({"message": "x" * 2000}).encode()  # what make bench posts: ~2 KB
ROUTES: dict[str, tuple[dict[str, Any], bytes]] = {
    "GET /": (SCOPE, b""),
    "POST /echo": (
        {
            **SCOPE,
            "method": "POST",
            "path": "/echo",
            "raw_path": b"/echo",
            "headers": [
                *SCOPE["headers"],
                (b"content-type", b"application/json"),
                (b"content-length", str(len(ECHO_BODY)).encode()),
            ],
        },
        ECHO_BODY,
    ),
}


WEBSOCKET = "WebSocket /ws, per message"
WEBSOCKET_SCOPE: dict[str, Any] = {
    **SCOPE,
    "type": "websocket",
    "scheme": "ws",
    "path": "/ws",
    "raw_path": b"/ws",
    "headers": [
        *SCOPE["headers"],
        (b"upgrade", b"websocket"),
        (b"connection", b"upgrade"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
    ],
    "subprotocols": [],
}
WEBSOCKET_MESSAGE = "x" * 64  # what the bench's WebSocket echo sends (bench/realtime.py)


def _bare() -> FastAPI:
    # The service's own routes, nothing around them, with the service's framework options
    # (bench/apps.py says why), and the bench's bare WebSocket echo.
    app = FastAPI(telemetry=TELEMETRY_OFF)
    app.include_router(root.router)
    app.include_router(echo.router)
    app.add_api_websocket_route("/ws", websocket_echo)
    return app


def _time_per_request(app: Any, route: str, batch: int, requests: int) -> float:
    """Microseconds per request, `batch` requests run per loop iteration."""
    scope, body = ROUTES[route]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def run() -> float:
        iterations = max(1, requests // batch)
        started = time.process_time()
        for _ in range(iterations):
            await asyncio.gather(*(app(dict(scope), receive, send) for _ in range(batch)))
            await asyncio.sleep(0)  # the iteration ends: what is scheduled once per iteration runs
        return (time.process_time() - started) / (iterations * batch) * 1e6

    return asyncio.run(run())


def _time_per_message(app: Any, sessions: int, messages: int) -> float:
    """Microseconds per WebSocket message echoed, `sessions` sessions at once, each message arriving
    in an event-loop iteration of its own (as under load: each iteration has one message of each
    session). The handshake and the close are spread over the session's messages."""

    async def session() -> None:
        arriving: Iterator[dict[str, Any]] = iter(
            [
                {"type": "websocket.connect"},
                *({"type": "websocket.receive", "text": WEBSOCKET_MESSAGE} for _ in range(messages)),
                {"type": "websocket.disconnect", "code": 1000},
            ]
        )
        echoed = 0

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0)  # the next message comes in the next iteration
            return next(arriving)

        async def send(message: Any) -> None:
            nonlocal echoed
            echoed += message["type"] == "websocket.send"

        await app({**WEBSOCKET_SCOPE, "state": {}}, receive, send)
        if echoed != messages:
            raise RuntimeError(f"the WebSocket echo sent {echoed} of {messages} messages back")

    async def run() -> float:
        started = time.process_time()
        await asyncio.gather(*(session() for _ in range(sessions)))
        return (time.process_time() - started) / (sessions * messages) * 1e6

    return asyncio.run(run())


# Each variant adds one layer to the one before it; the last is the production defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "service, access line and metrics off": {"access_log": False, "metrics_enabled": False},
    "service, metrics on": {"access_log": False, "metrics_enabled": True},
    "service, production defaults": {"access_log": True, "metrics_enabled": True},
}
BARE = "bare FastAPI"
# What each step from one variant to the next adds: its name, for the table.
LAYERS = {
    "service, access line and metrics off": "+ edge (request id, proxies, headers, limits, errors)",
    "service, metrics on": "+ metrics",
    "service, production defaults": "+ access line",
}


def measure(rounds: int, batch: int, requests: int) -> dict[str, dict[str, float]]:
    """Median microseconds per request, by route and app, measured in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as metrics_dir:
        command = [sys.executable, "-m", "bench.inprocess", "--json", f"--rounds={rounds}"]
        measured = subprocess.run(  # noqa: S603 - this same module, with our own arguments
            [*command, f"--batch={batch}", f"--requests={requests}"],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir},
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            check=True,
            text=True,
        )
    results: dict[str, dict[str, float]] = json.loads(measured.stdout)
    return results


def _measure_here(rounds: int, batch: int, requests: int) -> dict[str, dict[str, float]]:
    production = Settings(env="production", **VARIANTS["service, production defaults"])
    built: dict[str, Any] = {BARE: _bare()}
    for name, values in VARIANTS.items():
        built[name] = create_app(Settings(env="production", **values))
    worker_gc.settle()  # as every profile's worker does once the app is loaded
    samples: dict[str, dict[str, list[float]]] = {
        route: {name: [] for name in built} for route in [*ROUTES, WEBSOCKET]
    }
    # As many messages per WebSocket round as requests per HTTP round, `batch` sessions at once.
    sessions, messages = batch, max(1, requests // batch)
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)  # the lines land in a file, as a server's stdout would
        try:
            logging.config.dictConfig(log_config(production))
            for route in ROUTES:
                for app in built.values():
                    _time_per_request(app, route, batch, requests // 4)  # warm-up: first-call paths
            for app in built.values():
                _time_per_message(app, sessions, max(1, messages // 4))
            for _ in range(rounds):
                for route in ROUTES:
                    for name, app in built.items():
                        samples[route][name].append(_time_per_request(app, route, batch, requests))
                for name, app in built.items():
                    samples[WEBSOCKET][name].append(_time_per_message(app, sessions, messages))
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    return {
        route: {name: statistics.median(values) for name, values in by_app.items()}
        for route, by_app in samples.items()
    }


def layer_costs(results: dict[str, float]) -> dict[str, float]:
    """Microseconds per request each layer adds (the step from the variant before it)."""
    names = [BARE, *VARIANTS]
    return {LAYERS[name]: results[name] - results[before] for before, name in itertools.pairwise(names)}


def layer_table(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per route: bare FastAPI's µs per request, then what each layer adds."""
    return {
        route: {BARE: round(by_app[BARE], 1)}
        | {layer: round(micros, 1) for layer, micros in layer_costs(by_app).items()}
        for route, by_app in results.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="requests per event-loop iteration")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per app per round")
    parser.add_argument("--json", action="store_true", help="measure in this interpreter, print JSON")
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(_measure_here(args.rounds, args.batch, args.requests)))
        return 0
    results = measure(args.rounds, args.batch, args.requests)
    for route, by_app in results.items():
        bare = by_app[BARE]
        print(f"{route}")
        unit = "message" if route == WEBSOCKET else "request"
        for name, micros in by_app.items():
            print(f"  {name:<40} {micros:6.1f} µs/{unit}  ({bare / micros:.2f} of bare's rate)")
        for layer, micros in layer_costs(by_app).items():
            print(f"  {micros:+6.1f} µs  {layer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
