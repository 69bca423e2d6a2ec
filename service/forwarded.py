"""X-Forwarded-For / X-Forwarded-Proto, believed only when the peer is a trusted proxy.

This follows uvicorn's ProxyHeadersMiddleware rule for rule (uvicorn 0.54, pinned in uv.lock):
- the peer is trusted if its address is listed or inside a listed network, or the list is `*`;
- the client is the right-most `X-Forwarded-For` entry that is not itself a trusted
  proxy (each proxy appends the address it saw), or the left-most if all are or the
  list is `*`; an entry may carry a port (`1.2.3.4:5`, `[::1]:5`);
- `X-Forwarded-Proto` sets the scheme only to http, https, ws or wss, as given; on a
  websocket, http(s) becomes ws(s).
tests/unit/test_forwarded.py checks that, on generated inputs, against uvicorn's middleware.

Why not that middleware itself: importing it imports the uvicorn package, its server
and click into every hypercorn, granian and gunicorn-asgi worker, none of which runs
uvicorn: about 3 MB of RSS each (hypercorn, 1 worker: 61.7 -> 58.0 MB in `make bench`).
The edge layer (service/middleware/edge.py) applies it; the cost per request is unchanged.
"""

from __future__ import annotations

from starlette.types import Scope

from service.ip_lists import IPAllowList

_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def _entries(header_value: str) -> list[str]:
    return [item.strip() for item in header_value.split(",")]


def _host_and_port(entry: str) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` -> (host, port or 0); anything malformed stays whole."""
    if entry.startswith("["):
        end = entry.find("]")
        if end == -1:
            return entry, 0
        host, rest = entry[1:end], entry[end + 1 :]
        if not rest:
            return host, 0
        if not rest.startswith(":"):
            return entry, 0
        try:
            return host, int(rest[1:])
        except ValueError:
            return host, 0
    if entry.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        host, port = entry.rsplit(":", 1)
        try:
            return host, int(port)
        except ValueError:
            return entry, 0
    return entry, 0


class TrustedProxies(IPAllowList):
    """The proxies named by APP_FORWARDED_ALLOW_IPS, and what their headers say."""

    def client_address(self, forwarded_for: str) -> tuple[str, int]:
        entries = _entries(forwarded_for)
        if not self.allow_all:
            for entry in reversed(entries):
                host, port = _host_and_port(entry)
                if host not in self:
                    return host, port
        # `*`, or every hop is a trusted proxy: the first one named is the client.
        return _host_and_port(entries[0])

    def apply(self, scope: Scope) -> None:
        """Rewrite an http or websocket scope's client and scheme if its peer is trusted."""
        client = scope.get("client")
        if (client[0] if client else None) not in self:
            return
        proto: bytes | None = None
        forwarded_for: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
        if proto is not None:
            scheme = proto.decode("latin1").strip()
            if scheme in _SCHEMES:
                scope["scheme"] = scheme.replace("http", "ws") if scope["type"] == "websocket" else scheme
        if forwarded_for:
            host, port = self.client_address(b", ".join(forwarded_for).decode("latin1"))
            if host:  # an empty header names no one: keep the peer
                scope["client"] = (host, port)
