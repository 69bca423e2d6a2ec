"""Workloads, the load-generator interface, and wrk (preferred when it is on PATH)."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# ~2 KB JSON body for POST /echo, identical for every generator.
ECHO_BODY = json.dumps({"message": "x" * 2000}, separators=(",", ":")).encode()
REQUEST_TIMEOUT_SECONDS = 2.0
# wrk is stopped by its own -d; this is only the backstop should it hang.
WRK_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class Workload:
    key: str
    method: str
    path: str
    # Limited by the workers' CPU. GET /io is limited by its wait instead (64 connections x
    # 10 ms: at most 6,400 req/s), however its connections are spread over the workers.
    cpu_bound: bool = True
    # "http": requests (any generator); "ws", "sse": long-lived, driven by bench/realtime.py,
    # their rate read as messages/s or events/s.
    kind: str = "http"

    @property
    def label(self) -> str:
        if self.kind == "ws":
            return "WS /ws echo (msg/s)"
        if self.kind == "sse":
            return "SSE /events fan-out (events/s)"
        return f"{self.method} {self.path}"

    @property
    def body(self) -> bytes:
        return ECHO_BODY if self.method == "POST" else b""


WORKLOADS: dict[str, Workload] = {
    "get": Workload("get", "GET", "/"),
    "echo": Workload("echo", "POST", "/echo"),
    "io": Workload("io", "GET", "/io", cpu_bound=False),
    "ws": Workload("ws", "GET", "/ws", kind="ws"),
    # Paced by the streams' interval, not by the workers' CPU.
    "sse": Workload("sse", "GET", "/events", cpu_bound=False, kind="sse"),
}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int


class LoadGenerator(Protocol):
    name: str

    def run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
        """Drive `workload` against `base_url` for about `duration` seconds over keep-alive connections."""
        ...


class WrkError(Exception):
    pass


class Wrk:
    """wrk with `--latency`; the POST body goes in through a three-line Lua script."""

    def __init__(self, executable: str, threads: int = 1) -> None:
        self.executable = executable
        self.threads = threads
        self.name = f"wrk ({_wrk_version(executable)}, {threads} thread)"

    def run(self, base_url: str, workload: Workload, duration: float, connections: int) -> LoadResult:
        seconds = max(1, round(duration))
        command = [
            self.executable,
            f"-t{self.threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={REQUEST_TIMEOUT_SECONDS:g}s",
            "--latency",
        ]
        with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
            if workload.method != "GET":
                script = Path(tmp) / "request.lua"
                script.write_text(lua_script(workload))
                command += ["-s", str(script)]
            command.append(base_url + workload.path)
            completed = subprocess.run(  # noqa: S603 - wrk from PATH, loopback URL, no shell
                command, capture_output=True, text=True, timeout=seconds + WRK_GRACE_SECONDS, check=False
            )
        if completed.returncode != 0:
            raise WrkError(f"wrk exited with {completed.returncode}: {completed.stderr.strip()}")
        return parse_wrk_output(completed.stdout)


def lua_script(workload: Workload) -> str:
    body = workload.body.decode()
    return (
        f'wrk.method = "{workload.method}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [[{body}]]\n"
    )


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk_output(text: str) -> LoadResult:
    """Requests/s, p50/p99 and errors (status >= 400 plus socket errors) from `wrk --latency` output."""
    rps = _RPS.search(text)
    total = _REQUESTS.search(text)
    if rps is None or total is None:
        raise WrkError(f"unexpected wrk output:\n{text}")
    percentiles = {m[1]: float(m[2]) * _UNITS_MS[m[3]] for m in _PERCENTILE.finditer(text)}
    errors = 0
    if socket_errors := _SOCKET_ERRORS.search(text):
        errors += sum(int(n) for n in socket_errors.groups())
    if non_2xx := _NON_2XX.search(text):
        errors += int(non_2xx[1])
    return LoadResult(
        requests=int(total[1]),
        duration_s=float(total[2]) * _UNITS_MS[total[3]] / 1000.0,
        rps=float(rps[1]),
        p50_ms=percentiles.get("50"),
        p99_ms=percentiles.get("99"),
        errors=errors,
    )


def _wrk_version(executable: str) -> str:
    try:
        completed = subprocess.run(  # noqa: S603 - wrk from PATH, no shell
            [executable, "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    match = re.search(r"wrk\s+(\S+)", completed.stdout + completed.stderr)
    return match[1] if match else "unknown version"
