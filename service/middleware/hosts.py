"""Host header allow-list, with the probes exempt and a JSON 400 like every other error.

Matching follows Starlette's TrustedHostMiddleware (exact names, `*.domain` for
subdomains); the kubelet's HTTP probes send the pod IP as Host, which no
allow-list of public names contains, so the probes skip the check.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.health import PROBE_PATHS
from service.middleware.limits import reply


class HostAllowListMiddleware:
    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.exact = frozenset(h.lower() for h in allowed_hosts if not h.startswith("*."))
        self.suffixes = tuple(h[1:].lower() for h in allowed_hosts if h.startswith("*."))

    def allowed(self, host: str) -> bool:
        return host in self.exact or host.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
        host = raw.rsplit(":", 1)[0] if not raw.endswith("]") else raw
        if not self.allowed(host.lower().strip("[]")):
            await reply(send, 400, "Invalid host header")
            return
        await self.app(scope, receive, send)
