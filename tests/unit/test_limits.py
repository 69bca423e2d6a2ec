from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings(max_body_size=1000)))


def test_declared_oversized_body_is_413(client: TestClient) -> None:
    response = client.post("/echo", content=b"x" * 1001, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body larger than 1000 bytes"}
    assert "x-request-id" in response.headers


def test_streamed_oversized_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b'{"message": "' + b"y" * 100

    response = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == "Request body larger than 1000 bytes"


def test_body_at_the_limit_is_accepted(client: TestClient) -> None:
    body = b'{"message": "' + b"z" * (1000 - 15) + b'"}'
    assert len(body) == 1000
    assert client.post("/echo", content=body, headers={"content-type": "application/json"}).status_code == 200


@pytest.mark.anyio
async def test_over_concurrency_limit_is_503_and_probes_still_answer() -> None:
    app = create_app(Settings(max_concurrency=2))
    release = asyncio.Event()

    @app.get("/wait")
    async def wait() -> dict[str, bool]:
        await release.wait()
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        busy = [asyncio.create_task(client.get("/wait")) for _ in range(2)]
        await asyncio.sleep(0.05)
        rejected = await client.get("/")
        probe = await client.get("/healthz")
        release.set()
        done = await asyncio.gather(*busy)
        after = await client.get("/")
    assert rejected.status_code == 503
    assert rejected.headers["retry-after"] == "1"
    assert probe.status_code == 200
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200


def test_oversized_or_too_many_headers_are_431() -> None:
    client = TestClient(create_app(Settings(max_header_bytes=2048, max_header_count=20)))
    assert client.get("/", headers={"x-big": "a" * 4096}).status_code == 431
    many = {f"x-h{i}": "1" for i in range(30)}
    response = client.get("/", headers=many)
    assert response.status_code == 431
    assert response.json() == {"detail": "More than 20 request headers"}
    assert client.get("/", headers={"x-small": "a" * 100}).status_code == 200


def _post(app: object, http_version: str, headers: list[tuple[bytes, bytes]], body: bytes) -> list[int]:
    """The statuses sent for a POST /echo whose `receive` hands over `body`, whatever the headers say."""
    scope = {
        "type": "http",
        "http_version": http_version,
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))  # type: ignore[call-overload]

    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    return statuses


@pytest.mark.parametrize(
    ("http_version", "headers", "counted"),
    [
        ("1.1", [(b"content-length", b"20")], False),  # the server reads 20 bytes, no more
        ("1.0", [(b"content-length", b"20")], False),
        ("1.1", [], False),  # neither a length nor chunked: the server reads no body at all
        ("1.1", [(b"transfer-encoding", b"chunked")], True),
        ("1.1", [(b"content-length", b"20"), (b"transfer-encoding", b"chunked")], True),
        ("1.1", [(b"content-length", b"+20")], True),  # not a length an HTTP/1.1 server frames by
        ("1.1", [(b"content-length", b"20"), (b"content-length", b"99999")], True),  # which one?
        ("2", [(b"content-length", b"20")], True),  # a claim: the server does not stop at it
        ("3", [], True),
    ],
)
def test_a_body_is_counted_unless_an_http1_server_frames_it_by_its_length(
    http_version: str, headers: list[tuple[bytes, bytes]], counted: bool
) -> None:
    # A receive that hands over more than the limit, whatever was declared: where the body is
    # counted, that is a 413; where the server's framing bounds it, the app gets what it read.
    body = b'{"message": "' + b"y" * 2000 + b'"}'
    assert _post(create_app(Settings(max_body_size=1000)), http_version, headers, body) == [
        413 if counted else 200
    ]
