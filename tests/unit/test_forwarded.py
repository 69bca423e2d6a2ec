"""Trusted proxy headers: the same answers as uvicorn's ProxyHeadersMiddleware, on generated inputs."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from service.forwarded import TrustedProxies

# Few distinct values, so that peers, listed proxies and forwarded entries often coincide.
ADDRESSES = ["127.0.0.1", "10.0.0.1", "10.0.0.2", "10.1.2.3", "203.0.113.7", "::1", "2001:db8::5", "fe80::1"]
NETWORKS = ["10.0.0.0/8", "10.0.0.0/30", "203.0.113.0/24", "2001:db8::/32", "::1/128"]
NOT_ADDRESSES = [
    "",
    " ",
    "unknown",
    "testclient",
    "10.0.0",
    "[::1",
    "[::1]x",
    "1.2.3.4:x",
    "::1]:80",
    "a" * 300,
]


@st.composite
def forwarded_entry(draw: st.DrawFn) -> str:
    address = draw(st.sampled_from(ADDRESSES))
    port = draw(st.integers(min_value=1, max_value=65535))
    shape = draw(st.sampled_from(["bare", "port", "garbage"]))
    if shape == "garbage":
        return draw(st.sampled_from(NOT_ADDRESSES))
    if shape == "port":
        return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return address


TRUSTED = st.one_of(
    st.just(["*"]),
    st.lists(st.sampled_from(ADDRESSES + NETWORKS), min_size=1, max_size=4, unique=True),
)
PEERS = st.one_of(st.sampled_from(ADDRESSES), st.sampled_from(["testclient", ""]), st.none())
PROTOS = st.sampled_from(["http", "https", "ws", "wss", " https ", "HTTPS", "ftp", ""])
FORWARDED_FOR = st.lists(forwarded_entry(), min_size=0, max_size=4).map(", ".join)


def _scope(kind: str, peer: str | None, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": kind,
        "scheme": "ws" if kind == "websocket" else "http",
        "client": None if peer is None else (peer, 5000),
        "headers": headers,
    }


def _through_uvicorn(trusted: list[str], scope: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(inner: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(inner)

    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, None, None))  # type: ignore[arg-type]
    return seen


@settings(max_examples=400, deadline=None)
@given(
    trusted=TRUSTED,
    peer=PEERS,
    kind=st.sampled_from(["http", "websocket"]),
    protos=st.lists(PROTOS, max_size=2),
    forwarded_for=st.lists(FORWARDED_FOR, max_size=2),
)
def test_same_client_and_scheme_as_uvicorn(
    trusted: list[str], peer: str | None, kind: str, protos: list[str], forwarded_for: list[str]
) -> None:
    headers = [(b"x-forwarded-proto", proto.encode()) for proto in protos]
    headers += [(b"x-forwarded-for", value.encode()) for value in forwarded_for]
    headers.append((b"host", b"example.test"))
    scope = _scope(kind, peer, headers)
    expected = _through_uvicorn(trusted, copy.deepcopy(scope))
    TrustedProxies(trusted).apply(scope)
    assert (scope["client"], scope["scheme"]) == (expected["client"], expected["scheme"])


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        # Each proxy appends its peer: the right-most untrusted entry is the client.
        ("198.51.100.1, 203.0.113.7, 10.0.0.2", ("203.0.113.7", 0)),
        ("198.51.100.1:4711, 10.0.0.2", ("198.51.100.1", 4711)),
        ("[2001:db8::9]:443, 10.0.0.2", ("2001:db8::9", 443)),
        ("10.0.0.3, 10.0.0.2", ("10.0.0.3", 0)),  # all proxies: the first one named
        ("", ("10.0.0.1", 5000)),  # names no one: the peer stays
    ],
)
def test_client_is_the_nearest_untrusted_hop(forwarded_for: str, client: tuple[str, int]) -> None:
    scope = _scope("http", "10.0.0.1", [(b"x-forwarded-for", forwarded_for.encode())])
    TrustedProxies(["10.0.0.0/8"]).apply(scope)
    assert scope["client"] == client


def test_untrusted_peer_changes_nothing() -> None:
    headers = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]
    scope = _scope("http", "198.51.100.9", headers)
    TrustedProxies(["10.0.0.1"]).apply(scope)
    assert (scope["client"], scope["scheme"]) == (("198.51.100.9", 5000), "http")
