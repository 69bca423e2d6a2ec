"""Routes that take no input answer exactly as FastAPI would, without its per-request machinery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from service.app import create_app, include_flat
from service.errors import install_error_handlers
from service.settings import Settings


class Item(BaseModel):
    name: str
    label: str | None = Field(default=None, alias="itemLabel")
    secret: str | None = None


router = APIRouter()


@router.get("/model", response_model=Item, response_model_exclude_none=True)
async def model() -> Any:
    return {"name": "x", "itemLabel": "shown", "not in the model": 1}


@router.get("/dict")
async def plain_dict() -> Any:
    return {"a": 1, "when": datetime(2020, 1, 2, 3, 4, 5), "nan": float("nan")}


@router.post("/created", status_code=201)
async def created() -> Item:
    return Item(name="y")


@router.get("/teapot")
async def teapot() -> None:
    raise HTTPException(418, "short and stout", headers={"x-teapot": "yes"})


@router.get("/invalid", response_model=Item)
async def invalid() -> Any:
    return {"no name": 1}


@router.get("/crash")
async def crash() -> None:
    raise RuntimeError("deliberate")


@router.get("/no-content", status_code=204)
async def no_content() -> None:
    return None


@router.get("/response")
async def response() -> PlainTextResponse:
    return PlainTextResponse("hi", headers={"x-set-by": "endpoint"})


@router.get("/with-query")
async def with_query(number: int = 1) -> dict[str, int]:
    return {"number": number}


@router.get("/sync")
def sync() -> dict[str, str]:
    return {"sync": "yes"}


LEAN = ["/model", "/dict", "/created", "/teapot", "/invalid", "/crash", "/no-content", "/response"]
NOT_LEAN = ["/with-query", "/sync"]
COMPARED_HEADERS = ("content-type", "content-length", "x-set-by", "x-teapot")


def _service() -> FastAPI:
    app = create_app(Settings())
    include_flat(app, router)  # after create_app: still made lean, at the first request
    return app


def _reference() -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    install_error_handlers(app)
    return app


def _answer(client: TestClient, path: str) -> tuple[int, bytes, dict[str, str]]:
    method = "POST" if path == "/created" else "GET"
    reply = client.request(method, path)
    return reply.status_code, reply.content, {h: reply.headers.get(h, "") for h in COMPARED_HEADERS}


@pytest.fixture(scope="module")
def clients() -> tuple[TestClient, TestClient]:
    return (
        TestClient(_service(), raise_server_exceptions=False),
        TestClient(_reference(), raise_server_exceptions=False),
    )


@pytest.mark.parametrize("path", LEAN + NOT_LEAN)
def test_the_answer_is_fastapis(clients: tuple[TestClient, TestClient], path: str) -> None:
    service, reference = clients
    assert _answer(service, path) == _answer(reference, path)


def test_only_routes_without_input_are_lean(clients: tuple[TestClient, TestClient]) -> None:
    service, _ = clients
    service.get("/healthz")  # the middleware stack, and with it the lean routes, exist from here
    routes = [route for route in service.app.routes if isinstance(route, APIRoute)]  # type: ignore[attr-defined]
    lean = {route.path for route in routes if getattr(route.app, "lean", False)}
    assert lean == {*LEAN, "/", "/healthz"}  # not /readyz (takes the Request), /echo (a body)


def test_lean_routes_skip_dependency_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import routing

    solved: list[str] = []
    real = routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(routing, "solve_dependencies", counting)
    client = TestClient(create_app(Settings()))
    assert client.get("/").status_code == 200
    assert client.post("/echo", json={"message": "hi"}).status_code == 200
    assert solved == ["/echo"]
