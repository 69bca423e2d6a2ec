"""Security headers on every response (applied by service/middleware/edge.py).

JSON responses get a CSP that allows nothing (an API response is never a page);
HTML (the API docs in development) keeps its own. HSTS is sent only when the
request arrived over TLS, as resolved by the trusted proxy headers.
"""

from __future__ import annotations

# The same bare, versionless product token on every profile: granian and gunicorn's
# ASGI worker cannot drop the header, but they (like the others) send the app's own.
SERVER = (b"server", b"asgi")
ALWAYS = (
    SERVER,
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
JSON_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
