"""An app no worker can boot: its lifespan start-up fails (APP_ASGI_APP=tests.resilience.cannot_boot:app)."""

from __future__ import annotations

from deploy.heartbeat_files import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "deliberate: this worker cannot boot"})
