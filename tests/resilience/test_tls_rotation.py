"""Certificate rotation without a restart (deploy/certificate_watch.py), on every profile, under load.

The certificate lives where a Kubernetes Secret volume puts it: `tls.crt -> ..data/tls.crt`,
`..data -> ..2026_01`. It is renewed the way the kubelet does it: a new timestamped directory,
`..data` swapped to it atomically, the old directory removed. Meanwhile keep-alive clients and
clients opening a new connection per request run; every new handshake records the serial of the
certificate it was shown. Then a broken pair (a key that does not match) lands the same way: it
is refused in one log line and the renewed certificate keeps serving. Figures go to stdout (-s)
and resilience.json.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from deploy.profiles import PROFILES
from deploy.worker_timing import CERTIFICATE_POLL_SECONDS
from devkit.process import LOOPBACK, ServerProcess, launched
from service.tls import certificate_validity
from tests.resilience.support import (
    TWO_WORKERS_ENV,
    WORKERS,
    Load,
    Report,
    failures,
    retried,
    summarize_errors,
    wait_for,
    wait_workers,
)
from tests.support.certs import make_certificates, tls_server

pytestmark = pytest.mark.resilience

# Generous: a poll, then each worker's replacement (well under 2 s each here, unloaded).
ROTATION_BOUND = 15.0
STABLE_HANDSHAKES = 6  # the last this many new handshakes all saw the renewed certificate
REFUSAL = "TLS files changed but refused"
EXPIRY_METRIC = "tls_certificate_expiry_timestamp_seconds"
# Profiles that cannot rotate cleanly, with the reason: their test is a strict xfail. None today.
CANNOT_ROTATE: dict[str, str] = {}
# Profiles whose old worker, as it stops, cuts a connection it has just accepted, before its first
# response (measured: 0-1 per rotation, with 2 clients opening connections back to back, in about 2
# runs of 5). Their keep-alive requests must all succeed still, and a new connection may fail only
# that way. Not a rotation's own: any replacement of their workers under TLS does it
# (docs/production.md). The other profiles' workers stop accepting and let what they accepted
# settle before their stop (hypercorn: 4 runs of 20 cut one without it, 0 of 30 with it).
CUTS_NEW_CONNECTIONS_AT_STOP = {
    "granian": (
        "granian's worker stop ends its accept loop, dropping the TLS handshakes in progress with "
        "it, and at once gracefully shuts every connection, closing those whose request is not read "
        "yet: one signal does both (src/workers.rs), no step of the worker stops accepting alone"
    ),
}
CUT_BEFORE_A_RESPONSE = ("SSLEOFError", "SSLZeroReturnError", "RemoteDisconnected", "ConnectionResetError")


class SecretVolume:
    """A directory laid out, and updated, as the kubelet does a Secret volume."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.root = root
        self.generation = 0

    @property
    def cert(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key(self) -> Path:
        return self.root / "tls.key"

    def publish(self, cert: Path, key: Path) -> None:
        self.generation += 1
        new = self.root / f"..2026_{self.generation:02d}"
        new.mkdir()
        shutil.copyfile(cert, new / "tls.crt")
        shutil.copyfile(key, new / "tls.key")
        data = self.root / "..data"
        old = data.resolve() if data.is_symlink() else None
        staged = self.root / "..data_tmp"
        staged.symlink_to(new.name)
        os.replace(staged, data)  # the atomic swap
        for name in ("tls.crt", "tls.key"):
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")
        if old is not None:
            shutil.rmtree(old)  # as the kubelet does: the resolved path of before is gone


def serial_of(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


@dataclass
class Handshake:
    at: float
    serial: int | None
    status: int | None
    error: str | None = None
    pid: int | None = None  # the worker that answered


@dataclass
class NewConnections:
    """`clients` threads, each opening a new connection per request (bounded in count and time)."""

    port: int
    context: ssl.SSLContext
    clients: int = 2
    max_requests: int = 4000
    max_seconds: float = 20.0
    pause: float = 0.01
    done: list[Handshake] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> NewConnections:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.done) >= self.max_requests:
                    return
            self._record(self._one())
            time.sleep(self.pause)

    def _one(self) -> Handshake:
        connection = http.client.HTTPSConnection(LOOPBACK, self.port, timeout=5.0, context=self.context)
        serial = None
        try:
            connection.connect()
            peer = connection.sock.getpeercert() if isinstance(connection.sock, ssl.SSLSocket) else None
            serial = int(str(peer["serialNumber"]), 16) if peer else None
            connection.request("GET", "/pid", headers={"Connection": "close"})
            response = connection.getresponse()
            pid = json.loads(response.read()).get("pid") if response.status == 200 else None
            return Handshake(time.monotonic(), serial, response.status, pid=pid)
        except (OSError, http.client.HTTPException, ValueError) as error:
            return Handshake(time.monotonic(), serial, None, f"{type(error).__name__}: {error}")
        finally:
            connection.close()

    def _record(self, handshake: Handshake) -> None:
        with self._lock:
            self.done.append(handshake)

    def latest(self, count: int) -> list[Handshake]:
        with self._lock:
            return self.done[-count:]

    def stop(self) -> list[Handshake]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.done


def serves_only(connections: NewConnections, serial: int, after: float) -> bool:
    latest = connections.latest(STABLE_HANDSHAKES)
    return len(latest) == STABLE_HANDSHAKES and all(h.at > after and h.serial == serial for h in latest)


def every_worker_serving(connections: NewConnections, pids: set[int], serial: int) -> bool:
    latest = connections.latest(4 * STABLE_HANDSHAKES)
    return serves_only(connections, serial, 0.0) and pids <= {h.pid for h in latest if h.serial == serial}


def every_worker_new_and_serving(
    server: ServerProcess, connections: NewConnections, before: set[int]
) -> bool:
    now = server.worker_pids()
    answered = {h.pid for h in connections.latest(4 * STABLE_HANDSHAKES)}
    return len(now) == WORKERS and not now & before and now <= answered


def served_expiry(server: ServerProcess, context: ssl.SSLContext, cert_file: Path) -> float | None:
    """The expiry metric of the configured certificate file, as a scrape reads it now."""
    try:
        text = httpx.get(f"{server.base_url}/metrics", verify=context, timeout=5.0).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == EXPIRY_METRIC and sample.labels.get("file") == str(cert_file):
                return float(sample.value)
    return None


def refusals(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if REFUSAL in line]


def assert_new_connections_served(profile: str, failed: list[Handshake], clients: int) -> None:
    if profile not in CUTS_NEW_CONNECTIONS_AT_STOP:
        assert not failed, [h.error for h in failed]
        return
    cut = [h for h in failed if h.status is None and (h.error or "").startswith(CUT_BEFORE_A_RESPONSE)]
    assert cut == failed, [h.error for h in failed]
    assert len(cut) <= clients * WORKERS, f"{len(cut)} new connections cut"


def _param(profile: str) -> object:
    if profile in CANNOT_ROTATE:
        return pytest.param(profile, marks=pytest.mark.xfail(strict=True, reason=CANNOT_ROTATE[profile]))
    return profile


@pytest.mark.parametrize("profile", [_param(p) for p in sorted(PROFILES)])
def test_a_renewed_certificate_is_served_without_a_restart_or_a_lost_request(
    profile: str, tmp_path: Path, report: Report
) -> None:
    certs = make_certificates(tmp_path / "certs")
    volume = SecretVolume(tmp_path / "tls")
    volume.publish(certs.cert, certs.key)
    old_serial, new_serial = serial_of(certs.cert), serial_of(certs.renewed)
    context = certs.client_context(with_certificate=False)
    env = {
        **TWO_WORKERS_ENV,
        "APP_TLS_CERT_FILE": str(volume.cert),
        "APP_TLS_KEY_FILE": str(volume.key),
        "APP_DRAIN_SECONDS": "0",  # as in Kubernetes: the server is the launched process itself
    }
    with launched(tls_server(context), profile, env) as server:
        server.wait_ready()
        keepalive = Load(
            server.base_url,
            clients=2,
            max_requests=20_000,
            max_seconds=20,
            pause=0.005,
            retry_stale=True,
            verify=context,
        )
        fresh = NewConnections(server.port, context)
        with keepalive:
            fresh.start()
            try:
                before = wait_workers(server, WORKERS)
                # Every worker serves the first certificate: none is still booting to load the second.
                wait_for(lambda: every_worker_serving(fresh, before, old_serial), ROTATION_BOUND)
                swapped = time.monotonic()
                volume.publish(certs.renewed, certs.renewed_key)
                rotated = wait_for(lambda: serves_only(fresh, new_serial, swapped), ROTATION_BOUND)
                # The broken pair lands once every worker is a new one: a worker that starts while
                # the files hold a refused pair loads it (docs/production.md).
                replaced = wait_for(
                    lambda: every_worker_new_and_serving(server, fresh, before), ROTATION_BOUND
                )
                renewed_expiry = certificate_validity(certs.renewed).not_after.timestamp()
                expiry_followed = wait_for(
                    lambda: served_expiry(server, context, volume.cert) == renewed_expiry, ROTATION_BOUND
                )
                first_new = min((h.at for h in fresh.done if h.serial == new_serial), default=None)
                last_old = max((h.at for h in fresh.done if h.serial == old_serial), default=None)
                volume.publish(certs.renewed, certs.other_key)  # a key that does not match
                refused = wait_for(lambda: bool(refusals(server)), ROTATION_BOUND)
                broken_at = time.monotonic()
                time.sleep(2 * CERTIFICATE_POLL_SECONDS)  # long enough for a wrong rotation to show
                kept = serves_only(fresh, new_serial, broken_at)
            finally:
                handshakes = fresh.stop()
                outcomes = keepalive.stop()
        alive = server.process.poll() is None
        workers = len(server.worker_pids())
        lines = refusals(server)
        log_tail = server.log().splitlines()[-25:]
    failed_handshakes = [h for h in handshakes if h.status is None or h.status >= 500]
    report.add(
        f"tls_rotation[{profile}]",
        requests=len(outcomes) + len(handshakes),
        keepalive_requests=len(outcomes),
        new_connection_requests=len(handshakes),
        failed=len(failures(outcomes)) + len(failed_handshakes),
        errors=summarize_errors(outcomes),
        new_connection_errors=sorted({h.error for h in failed_handshakes if h.error}),
        new_connection_failed_at_s=[round(h.at - swapped, 3) for h in failed_handshakes],
        stale_connection_retries=retried(outcomes),
        first_new_serial_s=None if first_new is None else round(first_new - swapped, 3),
        last_old_serial_s=None if last_old is None else round(last_old - swapped, 3),
        workers_replaced_s=None if replaced is None or rotated is None else round(rotated + replaced, 3),
        refused_s=None if refused is None else round(refused, 3),
        expiry_metric_followed_s=None if expiry_followed is None else round(expiry_followed, 3),
    )
    assert rotated is not None, (
        f"new handshakes not all on the renewed certificate within {ROTATION_BOUND}s",
        log_tail,
    )
    assert replaced is not None, f"the workers were not all replaced within {ROTATION_BOUND}s"
    assert expiry_followed is not None, f"{EXPIRY_METRIC} does not show the renewed certificate's expiry"
    assert not failures(outcomes), summarize_errors(outcomes)
    assert_new_connections_served(profile, failed_handshakes, fresh.clients)
    assert refused is not None, f"the broken pair was not refused within {ROTATION_BOUND}s"
    assert len(lines) == 1, lines
    assert f"APP_TLS_KEY_FILE='{volume.key}'" in lines[0], lines[0]
    assert "does not match" in lines[0], lines[0]
    assert kept, "after the broken pair, new handshakes do not all see the renewed certificate"
    assert alive
    assert workers == WORKERS
