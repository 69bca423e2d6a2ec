"""Security headers on every response.

JSON responses get a CSP that allows nothing (an API response is never a page);
HTML (the API docs in development) keeps its own. HSTS is sent only when the
request arrived over TLS, as resolved by the trusted proxy headers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The same bare, versionless product token on every profile: granian and gunicorn's
# ASGI worker cannot drop the header, but they (like the others) send the app's own.
SERVER = (b"server", b"asgi")
ALWAYS = [
    SERVER,
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
JSON_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        over_tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                headers += ALWAYS
                content_type = next((v for k, v in headers if k == b"content-type"), b"")
                if content_type.startswith(b"application/json"):
                    headers.append(JSON_CSP)
                if over_tls:
                    headers.append(HSTS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
