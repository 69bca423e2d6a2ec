"""The HTTP contract every profile (and every deployment, via --base-url) must keep."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.smoke
# Needs a demo route (/echo, /events): not run against an app built with demo_routes=False.
demo_routes = pytest.mark.demo_routes

SEED = {"message": "Hello, ASGI with FastAPI!"}


def test_root_answers_the_seed_message(base_url: str) -> None:
    response = httpx.get(f"{base_url}/")
    assert response.status_code == 200
    assert response.json() == SEED
    assert response.headers["content-type"] == "application/json"


def test_liveness_and_readiness(base_url: str) -> None:
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok", "failing": []}
    ready = httpx.get(f"{base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"


def test_unknown_path_is_json_404(base_url: str) -> None:
    response = httpx.get(f"{base_url}/no/such/path")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_head_answers_like_get_without_the_body(base_url: str) -> None:
    got, head = httpx.get(f"{base_url}/"), httpx.head(f"{base_url}/")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-type"] == got.headers["content-type"]
    assert "x-request-id" in head.headers


@demo_routes
def test_head_on_a_stream_answers_its_headers_and_ends(base_url: str) -> None:
    events = httpx.head(f"{base_url}/events", timeout=5)
    assert events.status_code == 200
    assert events.headers["content-type"].startswith("text/event-stream")


def test_wrong_method_is_json_405(base_url: str) -> None:
    response = httpx.delete(f"{base_url}/")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"message": 5}', {"content-type": "application/json"}),
        (b'{"message": ', {"content-type": "application/json"}),
        (b'{"message": "hi", "extra": 1}', {"content-type": "application/json"}),
        (b"\xff\xfe", {"content-type": "application/json"}),
        (b"message=hi", {"content-type": "application/x-www-form-urlencoded"}),
    ],
    ids=["wrong-type", "broken-json", "unknown-field", "not-utf8", "not-json"],
)
@demo_routes
def test_invalid_input_is_json_422(base_url: str, content: bytes, headers: dict[str, str]) -> None:
    response = httpx.post(f"{base_url}/echo", content=content, headers=headers)
    assert response.status_code == 422
    assert "detail" in response.json()


@demo_routes
def test_valid_input_round_trips(base_url: str) -> None:
    response = httpx.post(f"{base_url}/echo", json={"message": "héllo"})
    assert response.status_code == 200
    assert response.json() == {"message": "héllo"}


def test_no_server_name_or_version_leaked(base_url: str) -> None:
    # The app sends one generic token; every server passes it on instead of its own.
    for path in ("/", "/no/such/path"):
        assert httpx.get(f"{base_url}{path}").headers.get_list("server") == ["asgi"]


def test_docs_served_in_development(base_url: str, local_only: None) -> None:
    assert httpx.get(f"{base_url}/docs").status_code == 200
    assert httpx.get(f"{base_url}/openapi.json").json()["info"]["title"]


def test_request_id_on_every_response(base_url: str) -> None:
    for path in ("/", "/no/such/path"):
        assert len(httpx.get(f"{base_url}{path}").headers["x-request-id"]) == 32
    kept = httpx.get(f"{base_url}/", headers={"X-Request-ID": "smoke-test-0001"})
    assert kept.headers["x-request-id"] == "smoke-test-0001"


def test_security_headers(base_url: str) -> None:
    headers = httpx.get(f"{base_url}/").headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
