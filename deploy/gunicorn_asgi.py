"""Gunicorn with its own built-in ASGI worker (`-k asgi`, gunicorn >= 24): no uvicorn in the request path.

Everything but the worker is what both gunicorn profiles share (deploy/gunicorn_app.py).
The worker is gunicorn's, subclassed (deploy/gunicorn_internals.py `head_timeout_worker`) for
the one thing it lacks: a request-head deadline, so silent or trickling connections are closed
after APP_REQUEST_HEAD_TIMEOUT seconds as on the other profiles. Outside that patch's tested
gunicorn releases, the worker is gunicorn's own `asgi`.
"""

from __future__ import annotations

from typing import Any

from deploy.gunicorn_app import GUNICORN, GunicornApplication, application_from, gunicorn_profile
from deploy.gunicorn_internals import ASGI_ACCEPT_SETTLE, HEAD_DEADLINE, head_timeout_worker
from deploy.profile import NO_PING_TIMEOUT, NO_PINGS, HttpVersions, Native, Project, Refused
from service.logs import ServerLoggers
from service.settings import Settings

# gunicorn's own HTTP/2 (h2 package) by ALPN over TLS. Its cleartext HTTP/2 answers only peers in
# forwarded_allow_ips (and refuses their HTTP/1 with 400 under prior knowledge): not h2c as the
# other servers serve it, so it stays off.
HTTP = HttpVersions(
    key="gunicorn.http_protocols",
    cleartext={frozenset({"http/1.1"}): "h1"},
    tls={frozenset({"http/1.1"}): "h1", frozenset({"http/1.1", "h2"}): "h2,h1"},
    why=(
        "gunicorn serves HTTP/1.1 to every client that does not pick h2 by ALPN; its h2c serves "
        "only trusted proxies; no HTTP/3"
    ),
)

# Where gunicorn and its ASGI worker log (service/logs.py configures them, access silenced).
LOGGERS = ServerLoggers(messages=("gunicorn.error",), access=("gunicorn.access",))


def options(settings: Settings) -> dict[str, Any]:
    return {
        "asgi_loop": "uvloop",
        "asgi_lifespan": "on",
        "root_path": "",  # applied by the app, see service/app.py
        # Proxy headers are applied by the app; gunicorn must not trust any itself.
        "secure_scheme_headers": {},
    }


def worker_class() -> str | type[Any]:
    """gunicorn's `asgi` worker, plus a request-head deadline where that patch applies."""
    return head_timeout_worker() if HEAD_DEADLINE.applies() else "asgi"


def application(settings: Settings) -> GunicornApplication:
    return application_from(PROFILE.launch_config(settings))


PROFILE = gunicorn_profile(
    name="gunicorn-asgi",
    loggers=LOGGERS,
    summary="gunicorn's arbiter with its own ASGI worker (`-k asgi`) on uvloop: no uvicorn at all",
    worker_class=worker_class,
    worker_settings={
        "ws_max_message_bytes": Native(f"{GUNICORN}.websocket_max_message_size", "beyond it: close 1009"),
        "ws_ping_interval": Refused(f"gunicorn-asgi {NO_PINGS}"),
        "ws_ping_timeout": Refused(f"gunicorn-asgi {NO_PING_TIMEOUT}"),
        # What each worker runs with beyond gunicorn's own settings (read by head_timeout_worker()).
        "request_head_timeout": Project(
            "request_head_timeout", "read by deploy/gunicorn_internals.py's worker and protocol"
        ),
        "graceful_timeout": Native(f"{GUNICORN}.graceful_timeout", "the ASGI worker drains this long itself"),
    },
    options=options,
    http=HTTP,
    carried=(HEAD_DEADLINE, ASGI_ACCEPT_SETTLE),
)
