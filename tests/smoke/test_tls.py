"""TLS and the HTTP versions on every profile, on real sockets, with certificates made here.

One server per profile (2 workers, so the supervisors' and arbiters' paths serve TLS too) runs
with mutual TLS and APP_TLS_MIN_VERSION=1.3, and every check of that profile shares it. The
HTTP versions each profile serves are read from its declaration (`PROFILE.http`), as the launcher
and docs/servers.md read them. Refused settings are real launches of `python -m deploy`.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from deploy.profiles import PROFILES, load_profile
from devkit.process import LOOPBACK, ServerProcess, launched, refused_at_startup, running_server
from service.tls import certificate_validity
from tests.support.access_lines import access_line
from tests.support.certs import Certificates, make_certificates, tls_server

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

T = TypeVar("T")
WAIT_SECONDS = 10.0
BODY_LIMIT = 4096
# Known server limitation, as in tests/smoke/test_realtime.py: granian sends no `websocket.accept` headers.
NO_ACCEPT_HEADERS = {"granian"}


def serves(profile: str, version: str, tls: bool) -> bool:
    return version in load_profile(profile).http.every(tls)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module", params=sorted(PROFILES))
def server(request: pytest.FixtureRequest, certs: Certificates) -> Iterator[ServerProcess]:
    env = {
        **certs.env(),
        "APP_TLS_CLIENT_CA_FILE": str(certs.ca),
        "APP_TLS_MIN_VERSION": "1.3",
        "APP_WORKERS": "2",
        "APP_LOG_FORMAT": "json",
        "APP_MAX_BODY_SIZE": str(BODY_LIMIT),
    }
    with launched(tls_server(certs.client_context()), request.param, env) as running:
        running.wait_ready()
        yield running


def client(certs: Certificates, **options: Any) -> httpx.Client:
    return httpx.Client(verify=certs.client_context(), timeout=5.0, **options)


def eventually(probe: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not seen within {WAIT_SECONDS:.0f}s: {what}")


def test_https_get_is_served_with_the_certificate_of_the_settings(
    server: ServerProcess, certs: Certificates
) -> None:
    with client(certs) as http1:
        response = http1.get(f"{server.base_url}/", headers={"X-Request-ID": "tls-get-1"})
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.headers["x-request-id"] == "tls-get-1"
    line = eventually(lambda: access_line(server, "tls-get-1"), "the access line")
    assert (line["scheme"], line["version"], line["status"]) == ("https", "1.1", 200)
    assert "HTTP/1.1" in line["message"]


def test_alpn_offers_h2_exactly_where_the_profile_declares_it(
    server: ServerProcess, certs: Certificates
) -> None:
    with client(certs, http2=True) as h2:
        response = h2.get(f"{server.base_url}/", headers={"X-Request-ID": "tls-alpn-1"})
    assert response.status_code == 200
    expected = "2" if serves(server.profile, "h2", tls=True) else "1.1"
    assert response.http_version == f"HTTP/{expected}"
    assert response.headers["x-request-id"] == "tls-alpn-1"
    line = eventually(lambda: access_line(server, "tls-alpn-1"), "the access line")
    assert (line["scheme"], line["version"]) == ("https", expected)
    assert f"HTTP/{expected}" in line["message"]

    def counted() -> str | None:
        with client(certs) as scraper:
            text = scraper.get(f"{server.base_url}/metrics").text
        return (
            text
            if metric(text, "http_requests_by_protocol_total", scheme="https", version=expected)
            else None
        )

    eventually(counted, f"https requests over HTTP/{expected} in the metrics")


def test_the_metrics_expose_when_the_served_certificate_expires(
    server: ServerProcess, certs: Certificates
) -> None:
    with client(certs) as scraper:
        text = scraper.get(f"{server.base_url}/metrics").text
    expiry = certificate_validity(certs.cert).not_after.timestamp()
    # Right after start-up too: a worker that has not read the file yet must not pull it to 0.
    assert metric(text, "tls_certificate_expiry_timestamp_seconds", file=str(certs.cert)) == expiry


def test_the_body_limit_holds_over_every_version(server: ServerProcess, certs: Certificates) -> None:
    for http2 in (False, True):
        with client(certs, http2=http2) as any_version:
            response = any_version.post(f"{server.base_url}/echo", content=b"x" * (BODY_LIMIT + 1))
        assert response.status_code == 413


def test_a_websocket_over_wss(server: ServerProcess, certs: Certificates) -> None:
    url = f"wss://{LOOPBACK}:{server.port}/ws"
    with connect(url, ssl=certs.client_context(), additional_headers={"X-Request-ID": "tls-ws-1"}) as ws:
        assert ws.response is not None
        sent_id = ws.response.headers.get("x-request-id")
        assert sent_id == (None if server.profile in NO_ACCEPT_HEADERS else "tls-ws-1")
        for message in ("over TLS", b"\x00\xff"):
            ws.send(message)
            assert ws.recv(timeout=5) == message
    line = eventually(lambda: access_line(server, "tls-ws-1"), "the session's access line")
    assert (line["method"], line["scheme"], line["close_code"]) == ("WEBSOCKET", "wss", 1000)


def test_mutual_tls_refuses_a_client_without_a_certificate(
    server: ServerProcess, certs: Certificates
) -> None:
    answer = b""
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as raw:
        context = certs.client_context(with_certificate=False)
        try:
            with context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
                # TLS 1.3: the server checks the client's (absent) certificate after the client's
                # Finished, so its alert arrives at the first read.
                tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = tls.recv(1024)
        except (ssl.SSLError, ConnectionError):
            answer = b""
    assert not answer.startswith(b"HTTP/")


def test_the_minimum_version_refuses_an_older_client(server: ServerProcess, certs: Certificates) -> None:
    context = certs.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=context, timeout=5.0) as old:
        old.get(f"{server.base_url}/")


H2C_PROFILES = [p for p in sorted(PROFILES) if serves(p, "h2c", tls=False)]


@pytest.mark.parametrize("profile", H2C_PROFILES)
def test_cleartext_http2_with_prior_knowledge_where_declared(profile: str) -> None:
    with running_server(profile, {"APP_LOG_FORMAT": "json"}) as server:
        with httpx.Client(http1=False, http2=True, timeout=5.0) as h2c:
            response = h2c.get(f"{server.base_url}/", headers={"X-Request-ID": "h2c-prior-knowledge-1"})
        assert (response.status_code, response.http_version) == (200, "HTTP/2")
        line = eventually(lambda: access_line(server, "h2c-prior-knowledge-1"), "the access line")
        assert (line["scheme"], line["version"]) == ("http", "2")


def test_a_profile_without_h2c_declares_none() -> None:
    assert H2C_PROFILES, "no profile serves h2c: the test above checks nothing"
    assert set(H2C_PROFILES) <= set(PROFILES)


REFUSALS: list[tuple[str, Callable[[Certificates], dict[str, str]], str]] = [
    (
        "uvicorn",
        lambda c: {"APP_TLS_CERT_FILE": str(c.expired), "APP_TLS_KEY_FILE": str(c.expired_key)},
        "the certificate expired on",
    ),
    (
        "granian",
        lambda c: {"APP_TLS_CERT_FILE": str(c.not_yet_valid), "APP_TLS_KEY_FILE": str(c.not_yet_valid_key)},
        "the certificate is not valid before",
    ),
    (
        "hypercorn",
        lambda c: {"APP_TLS_CERT_FILE": str(c.cert), "APP_TLS_KEY_FILE": str(c.other_key)},
        "the key does not match",
    ),
    ("gunicorn", lambda c: {"APP_TLS_CERT_FILE": str(c.cert)}, "APP_TLS_CERT_FILE needs APP_TLS_KEY_FILE"),
    (
        "gunicorn-asgi",
        lambda c: {"APP_TLS_CERT_FILE": str(c.cert), "APP_TLS_KEY_FILE": str(c.cert.parent / "missing.key")},
        "No such file",
    ),
    (
        "uvicorn",
        lambda c: {**c.env(), "APP_HTTP_VERSIONS": "http/1.1,h2"},
        "uvicorn cannot honour APP_HTTP_VERSIONS=http/1.1,h2",
    ),
    (
        "gunicorn",
        lambda c: {**c.env(), "APP_HTTP_VERSIONS": "h2"},
        "gunicorn cannot honour APP_HTTP_VERSIONS=h2",
    ),
    (
        "hypercorn",
        lambda c: {"APP_HTTP_VERSIONS": "http/1.1"},
        "hypercorn cannot honour APP_HTTP_VERSIONS=http/1.1",
    ),
    ("granian", lambda c: {"APP_HTTP_VERSIONS": "h2"}, "h2 needs TLS"),
    (
        "granian",
        lambda c: {**c.env(), "APP_HTTP_VERSIONS": "http/1.1,h2"},
        "granian cannot honour APP_HTTP_VERSIONS",
    ),
    (
        "hypercorn",
        lambda c: {**c.env(), "APP_HTTP_VERSIONS": "h3"},
        "hypercorn cannot honour APP_HTTP_VERSIONS=h3",
    ),
]


@pytest.mark.parametrize(
    ("profile", "env", "problem"), REFUSALS, ids=[f"{p}-{w[:24]}" for p, _, w in REFUSALS]
)
def test_a_tls_setting_the_profile_cannot_serve_stops_the_launch_in_one_line(
    profile: str, env: Callable[[Certificates], dict[str, str]], problem: str, certs: Certificates
) -> None:
    line = refused_at_startup(profile, env(certs))
    assert problem in line
    assert "BEGIN" not in line  # no key material in the message


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
