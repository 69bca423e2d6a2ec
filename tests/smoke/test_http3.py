"""HTTP/3 on hypercorn, on real sockets: a real QUIC client (aioquic) against `python -m deploy hypercorn`
with APP_HTTP_VERSIONS=http/1.1,h2,h3, certificates made here, and the settings h3 refuses.

One server (one process: what h3 needs, deploy/hypercorn.py) serves every check but the stop.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.process import ServerProcess, launched, refused_at_startup
from tests.support.access_lines import access_line
from tests.support.certs import Certificates, make_certificates, tls_server
from tests.support.h3 import h3_request

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

BODY_LIMIT = 4096
H3_ENV = {"APP_HTTP_VERSIONS": "http/1.1,h2,h3", "APP_WORKERS": "1", "APP_WORKER_TIMEOUT": "0"}
SEED = {"message": "Hello, ASGI with FastAPI!"}
WAIT_SECONDS = 10.0
# Far above WAIT_SECONDS: a stop that waited for it (hypercorn's QUIC loop, unwoken) would show.
GRACEFUL_SECONDS = "60"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def h3_server(certs: Certificates, **env: str) -> Any:
    full = {
        **certs.env(),
        **H3_ENV,
        "APP_LOG_FORMAT": "json",
        "APP_MAX_BODY_SIZE": str(BODY_LIMIT),
        "APP_GRACEFUL_TIMEOUT": GRACEFUL_SECONDS,
        **env,
    }
    return launched(tls_server(certs.client_context(with_certificate=False)), "hypercorn", full)


@pytest.fixture(scope="module")
def server(certs: Certificates) -> Iterator[ServerProcess]:
    with h3_server(certs) as running:
        running.wait_ready()
        yield running


def eventually_access_line(server: ServerProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        line = access_line(server, request_id)
        if line is not None:
            return line
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id} within {WAIT_SECONDS:.0f}s")


def h3_count(server: ServerProcess, certs: Certificates) -> float:
    text = httpx.get(f"{server.base_url}/metrics", verify=certs.client_context(), timeout=5.0).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_requests_by_protocol_total"
        and sample.labels.get("scheme") == "https"
        and sample.labels.get("version") == "3"
    )


def test_a_get_over_http3_is_served_like_any_other(server: ServerProcess, certs: Certificates) -> None:
    counted_before = h3_count(server, certs)
    response = h3_request("GET", server.port, "/", str(certs.ca), headers={"X-Request-ID": "h3-get-0001"})
    assert (response.status, json.loads(response.body)) == (200, SEED)
    assert response.headers["x-request-id"] == "h3-get-0001"
    line = eventually_access_line(server, "h3-get-0001")
    assert (line["scheme"], line["version"], line["status"]) == ("https", "3", 200)
    assert '"GET / HTTP/3" 200' in line["message"]
    assert h3_count(server, certs) == counted_before + 1


def test_answers_over_tcp_advertise_h3_on_the_same_port(server: ServerProcess, certs: Certificates) -> None:
    with httpx.Client(verify=certs.client_context(), http2=True, timeout=5.0) as tcp:
        for _ in range(2):  # HTTP/1.1, then h2 by ALPN on the kept connection alike
            response = tcp.get(f"{server.base_url}/")
            assert response.status_code == 200
            assert f'h3=":{server.port}"' in response.headers["alt-svc"]


def test_the_body_limit_holds_over_http3_and_http3_goes_on(
    server: ServerProcess, certs: Certificates
) -> None:
    body = b"x" * (BODY_LIMIT + 1)
    declared = {"content-type": "application/json", "content-length": str(len(body))}
    # Answered from Content-Length before the body arrives (the body comes after the answer: hypercorn
    # has forgotten the stream by then), then as the streamed body crosses the limit.
    for headers, late in ((declared, True), ({"content-type": "application/json"}, False)):
        response = h3_request(
            "POST", server.port, "/echo", str(certs.ca), headers=headers, body=body, body_after_answer=late
        )
        assert response.status == 413
        assert "connection" not in response.headers  # malformed in HTTP/3 (RFC 9114 4.2)
    assert h3_request("GET", server.port, "/", str(certs.ca)).status == 200


def test_sigterm_stops_an_http3_server_cleanly_once_its_connections_have(certs: Certificates) -> None:
    with h3_server(certs) as stopping:
        stopping.wait_ready()
        assert h3_request("GET", stopping.port, "/", str(certs.ca)).status == 200
        stopping.signal(signal.SIGTERM)
        assert stopping.wait_exit(timeout=WAIT_SECONDS) == 0
        assert "Traceback" not in stopping.log()


REFUSALS: list[tuple[str, Callable[[Certificates], dict[str, str]], str]] = [
    (
        "uvicorn",
        lambda c: {**c.env(), "APP_HTTP_VERSIONS": "http/1.1,h3"},
        "uvicorn cannot honour APP_HTTP_VERSIONS=http/1.1,h3",
    ),
    (
        "hypercorn",
        lambda c: {**c.env(), **H3_ENV, "APP_WORKERS": "2"},
        "hypercorn cannot honour APP_HTTP_VERSIONS=http/1.1,h2,h3: h3 needs hypercorn in one process",
    ),
    ("hypercorn", lambda c: {**H3_ENV, "APP_HTTP_VERSIONS": "http/1.1,h3"}, "h3 needs TLS"),
]


@pytest.mark.parametrize(
    ("profile", "env", "problem"), REFUSALS, ids=["another-profile", "two-workers", "no-tls"]
)
def test_h3_where_it_cannot_be_served_stops_the_launch_in_one_line(
    profile: str, env: Callable[[Certificates], dict[str, str]], problem: str, certs: Certificates
) -> None:
    assert problem in refused_at_startup(profile, env(certs))
