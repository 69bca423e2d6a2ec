"""What TLS costs on each profile: `python -m bench.tls [--quick] [--profiles a,b] [--out PREFIX]`.

Per profile, one worker at the production defaults, the same service on two servers side by
side: one in cleartext, one with APP_TLS_CERT_FILE/APP_TLS_KEY_FILE (a throwaway certificate).
Each round measures, one after the other:

- `GET /` over keep-alive connections, cleartext and HTTPS: what encryption costs a request;
- `GET /` with `Connection: close`, cleartext and HTTPS: every request a new connection, so the
  HTTPS figure is the rate of full TLS handshakes the worker can make;
- `GET /` over HTTP/2, multiplexed (h2load, many streams per connection), where the profile
  serves h2 over TLS (read from its declaration, `Profile.http`) and h2load is installed.

A point is the median of its rounds; a burst of noise on a shared machine lands on one round.
The report gives the rates side by side and as ratios (HTTPS / cleartext, h2 / HTTPS HTTP/1.1),
never an absolute figure to compare with another machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trustme

from bench import machine
from bench.load import WORKLOADS, LoadResult, Wrk, parse_wrk_output
from bench.servers import Server, bench_settings, running_server
from deploy.profiles import PROFILES, load_profile
from devkit.process import LOOPBACK, launched

RESULTS_PREFIX = Path(__file__).resolve().parent.parent / "docs" / "bench" / "tls"
CONNECTIONS = 32
H2_CONNECTIONS = 4
H2_STREAMS = 16  # concurrent streams per HTTP/2 connection: 64 requests in flight, as with HTTP/1.1
H2_REQUESTS_PER_CONNECTION = 800  # below any server's per-connection limit (see H2Load)
H2LOAD_TIMEOUT_SECONDS = 60.0  # a backstop: 3,200 requests take a few seconds
# The measurements of one round, in the order they run.
KEEP_ALIVE, KEEP_ALIVE_TLS, NEW_CONNECTION, NEW_CONNECTION_TLS, H2_TLS = (
    "http_keepalive",
    "https_keepalive",
    "http_new_connection",
    "https_new_connection",
    "h2_multiplexed",
)


class TlsServer(Server):
    """The bench's server, polled for readiness over HTTPS (the certificate is a throwaway)."""

    client_context = ssl._create_unverified_context()  # noqa: S323 - our own throwaway certificate


@dataclass(frozen=True)
class Point:
    rps: float
    p99_ms: float | None
    errors: int
    rounds: list[float]


def close_each_connection_script() -> str:
    return 'wrk.headers["Connection"] = "close"\n'


class H2Load:
    """h2load (nghttp2-client) for HTTP/2 over TLS, several streams per connection.

    A number of requests, not a duration: h2load does not reconnect, and a server may end a
    connection after so many requests (hypercorn's `keep_alive_max_requests`, 1,000), which
    would leave a timed run measuring idle clients. Each connection stays below that.
    """

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def run(self, url: str, requests_per_connection: int) -> LoadResult:
        command = [
            self.executable,
            f"--requests={requests_per_connection * H2_CONNECTIONS}",
            f"--clients={H2_CONNECTIONS}",
            f"--max-concurrent-streams={H2_STREAMS}",
            url,
        ]
        completed = subprocess.run(  # noqa: S603 - h2load from PATH, loopback URL, no shell
            command, capture_output=True, text=True, timeout=H2LOAD_TIMEOUT_SECONDS, check=False
        )
        return parse_h2load_output(completed.stdout)


_H2_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", re.MULTILINE)
_H2_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored,"
    r" (\d+) timeout",
    re.MULTILINE,
)
_H2_PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.MULTILINE)
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


class H2LoadError(Exception):
    pass


def parse_h2load_output(text: str) -> LoadResult:
    """Requests/s and errors of an h2load run that spoke HTTP/2 (failed: a 4xx or 5xx answer;
    errored: no answer; timeout)."""
    finished, requests = _H2_FINISHED.search(text), _H2_REQUESTS.search(text)
    protocol = _H2_PROTOCOL.search(text)
    if finished is None or requests is None:
        raise H2LoadError(f"unexpected h2load output:\n{text}")
    if protocol is None or protocol[1] != "h2":
        raise H2LoadError(f"h2load did not speak HTTP/2 (ALPN: {protocol[1] if protocol else 'none'})")
    done, failed, errored, timeout = (int(requests[n]) for n in (3, 5, 6, 7))
    return LoadResult(
        requests=done,
        duration_s=float(finished[1]) * _SECONDS[finished[2]],
        rps=float(finished[3]),
        p50_ms=None,
        p99_ms=None,
        errors=failed + errored + timeout,
    )


def serves_h2_over_tls(profile: str) -> bool:
    return "h2" in load_profile(profile).http.every(tls=True)


@contextlib.contextmanager
def certificate() -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        issued = trustme.CA().issue_cert(LOOPBACK)
        cert, key = Path(tmp) / "server.pem", Path(tmp) / "server.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        yield {"APP_TLS_CERT_FILE": str(cert), "APP_TLS_KEY_FILE": str(key)}


@dataclass(frozen=True)
class Tools:
    wrk: Wrk
    h2load: H2Load | None  # None: not installed, no HTTP/2 figures
    h2_requests_per_connection: int


def measure_profile(
    profile: str, tools: Tools, rounds: int, duration: float, tls_env: dict[str, str]
) -> dict[str, Any]:
    app = "bench.apps:service"
    get = WORKLOADS["get"]
    with tempfile.TemporaryDirectory(prefix="bench-tls-wrk-") as tmp:
        close_script = Path(tmp) / "close.lua"
        close_script.write_text(close_each_connection_script())
        with (
            running_server(profile, app, 1) as plain,
            launched(TlsServer, profile, bench_settings(1, app, tls_env)) as secure,
        ):
            plain.wait_ready("/readyz")
            secure.wait_ready("/readyz")
            runs: dict[str, Callable[[], LoadResult]] = {
                KEEP_ALIVE: lambda: tools.wrk.run(plain.base_url, get, duration, CONNECTIONS),
                KEEP_ALIVE_TLS: lambda: tools.wrk.run(secure.base_url, get, duration, CONNECTIONS),
                NEW_CONNECTION: lambda: _wrk_script(tools.wrk, plain.base_url, close_script, duration),
                NEW_CONNECTION_TLS: lambda: _wrk_script(tools.wrk, secure.base_url, close_script, duration),
            }
            h2load = tools.h2load
            if h2load is not None and serves_h2_over_tls(profile):
                per_connection = (
                    H2_REQUESTS_PER_CONNECTION if duration > 1 else H2_REQUESTS_PER_CONNECTION // 4
                )
                runs[H2_TLS] = lambda: h2load.run(secure.base_url + "/", per_connection)
            results: dict[str, list[LoadResult]] = {name: [] for name in runs}
            for _ in range(rounds):
                for name, run in runs.items():
                    results[name].append(run())
    return {name: asdict(_median(found)) for name, found in results.items()}


def _wrk_script(wrk: Wrk, base_url: str, script: Path, duration: float) -> LoadResult:
    seconds = max(1, round(duration))
    command = [
        wrk.executable,
        f"-t{wrk.threads}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout=2s",
        "--latency",
        "-s",
        str(script),
        base_url + "/",
    ]
    completed = subprocess.run(  # noqa: S603 - wrk from PATH, loopback URL, no shell
        command, capture_output=True, text=True, timeout=seconds + 15, check=False
    )
    return parse_wrk_output(completed.stdout)


def _median(found: list[LoadResult]) -> Point:
    ordered = sorted(found, key=lambda r: r.rps)
    middle = ordered[len(ordered) // 2]
    return Point(
        rps=round(statistics.median(r.rps for r in found), 1),
        p99_ms=middle.p99_ms,
        errors=sum(r.errors for r in found),
        rounds=[round(r.rps, 1) for r in found],
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def markdown(results: dict[str, Any]) -> str:
    """The table of a run: rates side by side, and the ratios that compare like with like."""
    lines = [
        "| profile | keep-alive req/s (HTTP / HTTPS) | HTTPS / HTTP | new connections/s (HTTP / HTTPS:"
        " handshakes) | HTTPS / HTTP | HTTP/2 multiplexed req/s | h2 / HTTPS HTTP/1.1 | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def rate(point: dict[str, Any] | None) -> str:
        return f"{point['rps']:,.0f}" if point else "n/a"

    def shown(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "n/a"

    for profile, points in results["profiles"].items():
        keep, keep_tls = points.get(KEEP_ALIVE), points.get(KEEP_ALIVE_TLS)
        new, new_tls = points.get(NEW_CONNECTION), points.get(NEW_CONNECTION_TLS)
        h2 = points.get(H2_TLS)
        errors = sum(point["errors"] for point in points.values())
        lines.append(
            f"| {profile} | {rate(keep)} / {rate(keep_tls)} | "
            f"{shown(ratio(keep_tls and keep_tls['rps'], keep and keep['rps']))} | "
            f"{rate(new)} / {rate(new_tls)} | "
            f"{shown(ratio(new_tls and new_tls['rps'], new and new['rps']))} | {rate(h2)} | "
            f"{shown(ratio(h2 and h2['rps'], keep_tls and keep_tls['rps']))} | {errors} |"
        )
    run = results["run"]
    lines += [
        "",
        f"One worker per server at the production defaults; {run['rounds']} rounds, each point the median"
        f" round; wrk runs of {run['duration_s']:g} s over {CONNECTIONS} connections;"
        f" h2load {H2_CONNECTIONS} connections x {H2_STREAMS} streams, {run['h2_requests_per_connection']}"
        " requests per connection"
        + ("" if run["h2load"] else " (h2load not installed: no HTTP/2 figures)")
        + f". Machine: {run['machine']['nproc']} CPUs,"
        f" load average at start {run['machine']['loadavg_at_start']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s per measurement")
    parser.add_argument("--profiles", default=",".join(sorted(PROFILES)))
    parser.add_argument("--out", type=Path, default=RESULTS_PREFIX, help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        print("bench.tls needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    profiles = [p for p in args.profiles.split(",") if p]
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        print(f"bench.tls: unknown profiles {unknown}; choose from {sorted(PROFILES)}", file=sys.stderr)
        return 2
    h2load_path = shutil.which("h2load")
    rounds, duration = (1, 1.0) if args.quick else (3, 5.0)
    h2_requests = H2_REQUESTS_PER_CONNECTION // 4 if args.quick else H2_REQUESTS_PER_CONNECTION
    tools = Tools(Wrk(wrk_path), H2Load(h2load_path) if h2load_path else None, h2_requests)
    started = time.monotonic()
    results: dict[str, Any] = {
        "run": {
            "rounds": rounds,
            "duration_s": duration,
            "h2load": h2load_path is not None,
            "h2_requests_per_connection": h2_requests,
            "machine": machine.describe(),
            "versions": machine.versions(),
        },
        "profiles": {},
    }
    with certificate() as tls_env:
        for profile in profiles:
            print(f"bench.tls: {profile}", file=sys.stderr, flush=True)
            results["profiles"][profile] = measure_profile(profile, tools, rounds, duration, tls_env)
    results["run"]["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
