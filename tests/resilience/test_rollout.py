"""A rolling update through a real load balancer loses no request, on every profile.

HAProxy (the distribution's package, run in the foreground and stopped by PID) stands
where an ingress controller would: it balances over two instances and follows their
readiness the way an ingress follows a pod's readiness probe (`GET /readyz` every
second, out after two failures, in after one success, like the Deployment's probe).
Under wrk load through it, a new instance starts and joins, then the old one gets SIGTERM
as the kubelet sends it. wrk counts every non-2xx answer and every socket error.

With a drain window, the old instance answers /readyz 503 while it keeps serving, HAProxy
takes it out of rotation, and only then does it stop: zero failures. With the window set
to 0, it stops listening the moment SIGTERM arrives while HAProxy still routes to it: the
same scenario must show the losses the window exists to prevent. Both run in a row behind
one HAProxy (A is replaced by B, then B by C), which spares a proxy and an instance start.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.profiles import PROFILES
from devkit.process import LOOPBACK, ServerProcess, free_port, running_server
from tests.resilience.support import Report, wait_for
from tests.support.tools import require_tools

pytestmark = pytest.mark.resilience

DRAIN_SECONDS = 3  # > HAProxy's worst case to notice a 503 (inter 1 s, fall 2: 2 s), with a margin
GRACEFUL_SECONDS = 5
CONNECTIONS = 64
MAX_LOAD_SECONDS = 20  # wrk's own bound; the test interrupts it as soon as A has exited
# Once HAProxy has taken A out, keep the load on until requests it was still retrying on A
# (3 retries, `timeout connect` apart) have their answer, so wrk counts them.
LOAD_AFTER_OUT = 2.0
HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    maxconn 2000

defaults
    mode http
    timeout connect 500ms
    timeout client 10s
    timeout server 10s

frontend web
    bind {host}:{port}
    default_backend instances

# Readiness as the Deployment declares it (failureThreshold 2, successThreshold 1), its period
# scaled down from 5 s to 1 s. A new connection per request, as nginx proxies by default.
backend instances
    balance roundrobin
    option http-server-close
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}
"""


@dataclass
class WrkResult:
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    output: str

    @property
    def failed(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def parse_wrk(output: str) -> WrkResult:
    total = re.search(r"(\d+) requests in", output)
    assert total, f"no request count in wrk's output:\n{output}"
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if errors:
        socket_errors = dict(zip(socket_errors, map(int, errors.groups()), strict=True))
    return WrkResult(int(total.group(1)), int(non_2xx.group(1)) if non_2xx else 0, socket_errors, output)


class HAProxy:
    def __init__(self, process: subprocess.Popen[str], stats_socket: Path, port: int) -> None:
        self.process = process
        self.stats_socket = stats_socket
        self.port = port

    def server_states(self) -> dict[str, str]:
        """`show stat` over the admin socket: server name -> UP / DOWN / ..."""
        states: dict[str, str] = {}
        for line in self.command("show stat").splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "instances" and fields[1] not in ("BACKEND", "FRONTEND"):
                states[fields[1]] = fields[17].split(" ")[0]
        return states

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def enable(self, server: str) -> None:
        """Put a server into the backend, as an endpoint controller adds a new pod."""
        answer = self.command(f"enable server instances/{server}")
        assert not answer.strip(), f"HAProxy refused to enable {server}: {answer}"

    def wait_state(self, server: str, state: str, timeout: float = 15) -> None:
        def reached() -> bool:
            with contextlib.suppress(OSError):
                return self.server_states().get(server) == state
            return False

        if wait_for(reached, timeout, interval=0.05) is None:
            pytest.fail(f"HAProxy never saw server {server} {state}: {self.server_states()}")


@contextlib.contextmanager
def haproxy(servers: dict[str, int]) -> Iterator[HAProxy]:
    binary = require_tools("haproxy", install="apt-get install -y haproxy")["haproxy"]
    with tempfile.TemporaryDirectory(prefix="haproxy-") as tmp:
        port = free_port()
        stats_socket = Path(tmp, "admin.sock")
        config = Path(tmp, "haproxy.cfg")
        config.write_text(
            HAPROXY_CONFIG.format(
                socket=stats_socket,
                host=LOOPBACK,
                port=port,
                servers="\n".join(
                    # Only the first starts in rotation; the others wait, like pods not yet
                    # in the endpoints, until enable() (then HAProxy checks them as usual).
                    f"    server {name} {LOOPBACK}:{p} check{'' if i == 0 else ' disabled'}"
                    for i, (name, p) in enumerate(servers.items())
                ),
            )
        )
        log = Path(tmp, "haproxy.log").open("w+")  # noqa: SIM115 - closed below, after the process
        # -db: stay in the foreground, so this PID is HAProxy itself and stops with it.
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            if wait_for(stats_socket.exists, 10) is None:
                log.seek(0)
                pytest.fail(f"HAProxy did not start:\n{log.read()}")
            yield HAProxy(process, stats_socket, port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            log.close()


def wrk(port: int) -> subprocess.Popen[str]:
    binary = require_tools("wrk", install="apt-get install -y wrk")["wrk"]
    return subprocess.Popen(
        [binary, "-t1", f"-c{CONNECTIONS}", f"-d{MAX_LOAD_SECONDS}s", f"http://{LOOPBACK}:{port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(load: subprocess.Popen[str]) -> WrkResult:
    """Interrupt wrk (it reports what it counted so far on SIGINT) and parse its report."""
    if load.poll() is None:
        load.send_signal(signal.SIGINT)
    try:
        output, _ = load.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        load.kill()
        output, _ = load.communicate(timeout=5)
    return parse_wrk(output)


def step(
    proxy: HAProxy, old: tuple[str, ServerProcess], new: tuple[str, ServerProcess], drain: int
) -> dict[str, object]:
    """Under load through HAProxy: `new` joins (until HAProxy's check finds it ready), then `old`
    gets SIGTERM."""
    (old_name, old), (new_name, new) = old, new
    load = wrk(proxy.port)
    try:
        proxy.enable(new_name)
        proxy.wait_state(new_name, "UP")
        joined = time.monotonic()
        old.signal(signal.SIGTERM)
        code = old.wait_exit(timeout=drain + GRACEFUL_SECONDS + 10)
        stop_seconds = time.monotonic() - joined
        proxy.wait_state(old_name, "DOWN")
        time.sleep(LOAD_AFTER_OUT)
        result = finish(load)
        assert new.process.poll() is None, "the new instance died during the rollout"
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(timeout=5)
    return {
        "requests": result.requests,
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "failed": result.failed,
        "old_exit_code": code,
        "old_stop_seconds": round(stop_seconds, 2),
        "wrk": result.output,
    }


def instance_env(drain_seconds: int) -> dict[str, str]:
    return {
        "APP_WORKERS": "1",
        "APP_ACCESS_LOG": "false",
        "APP_DRAIN_SECONDS": str(drain_seconds),
        "APP_GRACEFUL_TIMEOUT": str(GRACEFUL_SECONDS),
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_rollout_through_haproxy_loses_nothing_and_does_without_drain_window(
    profile: str, report: Report
) -> None:
    """Two rollouts in a row behind one HAProxy: A (drain window on) is replaced by B, then B
    (window 0) by C. The first must lose nothing; the second must lose requests, or this test
    could not tell a working drain from a broken one."""
    # Started together before any load: a start competing with wrk for two cores would only
    # make the test slower, and the join that matters is HAProxy's.
    with (
        running_server(profile, instance_env(DRAIN_SECONDS), wait_ready=False) as a,
        running_server(profile, instance_env(0), wait_ready=False) as b,
        running_server(profile, instance_env(0), wait_ready=False) as c,
    ):
        for instance in (a, b, c):
            instance.wait_ready()
        with haproxy({"a": a.port, "b": b.port, "c": c.port}) as proxy:
            proxy.wait_state("a", "UP")
            drained = step(proxy, ("a", a), ("b", b), DRAIN_SECONDS)
            undrained = step(proxy, ("b", b), ("c", c), 0)
    outputs = drained.pop("wrk"), undrained.pop("wrk")
    report.add(f"rollout[{profile}][drain={DRAIN_SECONDS}s]", **drained)
    report.add(f"rollout[{profile}][drain=0s]", **undrained)
    assert drained["requests"] > 0, outputs[0]
    assert drained["failed"] == 0, f"failed requests during the rollout with a drain window:\n{outputs[0]}"
    assert undrained["failed"] > 0, f"no loss without a drain window: the test cannot tell\n{outputs[1]}"
