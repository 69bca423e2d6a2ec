from __future__ import annotations

import logging

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from service.app import create_app
from service.middleware.edge import HTTP1_VERSIONS, response_headers
from service.request_id import request_id_var
from service.settings import Settings


@pytest.fixture
def client() -> TestClient:
    app = create_app(Settings(forwarded_allow_ips="10.0.0.1"))  # type: ignore[arg-type]

    @app.get("/context")
    async def context(request: Request) -> dict[str, str]:
        return {"var": request_id_var.get(), "state": request.state.request_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail")

    return TestClient(app, raise_server_exceptions=False, client=("10.0.0.1", 4000))


@pytest.mark.parametrize("path", ["/", "/no-such-path", "/boom"])
def test_every_response_carries_a_generated_request_id(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert len(response.headers["x-request-id"]) == 32


def test_well_formed_incoming_id_is_kept_and_visible_to_the_app(client: TestClient) -> None:
    response = client.get("/context", headers={"X-Request-ID": "abc-123_def.456:789"})
    assert response.headers["x-request-id"] == "abc-123_def.456:789"
    assert response.json() == {"var": "abc-123_def.456:789", "state": "abc-123_def.456:789"}


@pytest.mark.parametrize(
    "hostile", [b"short", b"x" * 129, b"has space inside", b"semi;colon-0001", "ünïcode-id-here".encode()]
)
def test_malformed_incoming_id_is_replaced_not_echoed(client: TestClient, hostile: bytes) -> None:
    response = client.get("/", headers={b"X-Request-ID": hostile})
    assert response.headers["x-request-id"].encode() != hostile
    assert len(response.headers["x-request-id"]) == 32


def test_unhandled_error_logged_once_with_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = client.get("/boom", headers={"X-Request-ID": "trace-me-0001"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-me-0001"
    records = [r for r in caplog.records if "internal detail" in (r.exc_text or "") or r.exc_info]
    assert len(records) == 1
    assert "trace-me-0001" in records[0].getMessage()


def test_security_headers_on_json(client: TestClient) -> None:
    headers = client.get("/").headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "strict-transport-security" not in headers


def test_security_headers_on_errors(client: TestClient) -> None:
    for path in ("/no-such-path", "/boom"):
        assert client.get(path).headers["x-content-type-options"] == "nosniff"


def test_docs_page_keeps_its_own_csp(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "content-security-policy" not in response.headers


def test_hsts_only_when_a_trusted_proxy_says_tls(client: TestClient) -> None:
    assert "strict-transport-security" in client.get("/", headers={"X-Forwarded-Proto": "https"}).headers
    untrusted = TestClient(client.app, client=("192.0.2.1", 4000))
    assert (
        "strict-transport-security" not in untrusted.get("/", headers={"X-Forwarded-Proto": "https"}).headers
    )


@pytest.mark.parametrize(("version", "kept"), [("1.1", True), ("1.0", True), ("2", False), ("3", False)])
@pytest.mark.parametrize("closing", [False, True])
def test_a_connection_header_only_on_http1(version: str, kept: bool, closing: bool) -> None:
    # HTTP/2 and HTTP/3 forbid connection-specific fields (RFC 9113 8.2.2, RFC 9114 4.2).
    app_headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    http1 = version in HTTP1_VERSIONS
    headers = response_headers(app_headers, False, closing, (b"x-request-id", b"id"), http1)
    connection = [value for name, value in headers if name == b"connection"]
    assert connection == ([b"close"] if kept else [])
