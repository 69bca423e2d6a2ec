"""Routes that take no input, served without FastAPI's per-request machinery.

For every route FastAPI builds a `Request`, two `AsyncExitStack`s, a placeholder
`Response` for dependencies to write to, resolves the (empty) dependency tree and
wraps the route in its own exception handling: about a third of a `GET /` here.
A route whose endpoint takes nothing (no parameters, no body, no dependencies, not
even the app's own, no `Request`, `Response` or `BackgroundTasks`) and is a plain
`async def` needs none of it. Such a route's ASGI app is replaced by one that awaits
the endpoint and answers exactly as FastAPI does: a returned `Response` as is;
anything else validated against the declared response model and serialised by
pydantic-core (`serialize_response`, FastAPI's own function, with the route's
include/exclude/alias options), or with `jsonable_encoder` and the route's response
class when there is no model. Errors take the same path: an `HTTPException` or any
other exception goes to the app's exception handlers (Starlette's
ExceptionMiddleware handles them for the whole app), a response that fails its model
is a `ResponseValidationError`.

Applied to the routes declared on the app itself (`include_flat` declares a router's
there), when the app builds its middleware stack: routes added after `create_app` too.
The OpenAPI schema, the routing and `scope["route"]` are the route's own, unchanged.
Not applied while FastAPI's telemetry traces requests (its spans come from that
machinery), nor to routes with a custom response class, streams or sync endpoints.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.datastructures import DefaultPlaceholder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, serialize_response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.versions import require

require(
    "fastapi",
    ">=0.165,<0.166",
    "service/lean_routes.py (APIRoute.dependant, serialize_response, DefaultPlaceholder)",
)


def takes_no_input(route: APIRoute) -> bool:
    dependant = route.dependant
    call = dependant.call
    return (
        not (
            dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.dependencies
        )
        and dependant.request_param_name is None
        and dependant.websocket_param_name is None
        and dependant.http_connection_param_name is None
        and dependant.response_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
        and route.body_field is None
        and call is not None
        and inspect.iscoroutinefunction(call)
        and isinstance(route.response_class, DefaultPlaceholder)
        and route.response_class.value is JSONResponse
    )


def lean_app(route: APIRoute) -> ASGIApp:
    """The route's ASGI app without FastAPI's per-request machinery (see the module docstring)."""
    endpoint = route.dependant.call
    if endpoint is None:
        raise ValueError(f"route {route.path} has no endpoint")
    field = route.response_field
    status: dict[str, Any] = {"status_code": route.status_code} if route.status_code else {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raw = await endpoint()
        if isinstance(raw, Response):
            response = raw
        else:
            content = await serialize_response(
                field=field,
                response_content=raw,
                include=route.response_model_include,
                exclude=route.response_model_exclude,
                by_alias=route.response_model_by_alias,
                exclude_unset=route.response_model_exclude_unset,
                exclude_defaults=route.response_model_exclude_defaults,
                exclude_none=route.response_model_exclude_none,
                is_coroutine=True,
                dump_json=field is not None,
            )
            if field is not None:
                response = Response(content, media_type="application/json", **status)
            else:
                response = JSONResponse(content, **status)
            if not is_body_allowed_for_status_code(response.status_code):
                response.body = b""
        await response(scope, receive, send)

    return app


def make_lean(routes: list[BaseRoute]) -> None:
    """Give every route that takes no input its lean app, once."""
    for route in routes:
        if isinstance(route, APIRoute) and not getattr(route.app, "lean", False) and takes_no_input(route):
            route.app = lean_app(route)
            route.app.lean = True  # type: ignore[attr-defined]
