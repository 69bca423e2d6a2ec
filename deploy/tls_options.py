"""What the profiles share to serve TLS: the minimum version through the servers' public context hooks.

A worker that cannot load the TLS files (a pair the certificate watch refused is on disk when it
starts: deploy/certificate_watch.py) fails to boot; it never serves cleartext.

uvicorn (`ssl_context_factory`) and gunicorn (the `ssl_context` server hook) both hand a hook
their default context factory, built from their own certificate options; the hook returns
that context with APP_TLS_MIN_VERSION set.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.settings import Settings
from service.tls import minimum_version

logger = logging.getLogger("deploy.tls")
# The exit status gunicorn's arbiter reads as "a worker failed to boot" (Arbiter.WORKER_BOOT_ERROR):
# it stops the server instead of respawning. uvicorn's supervised workers exit with it too.
WORKER_BOOT_ERROR = 3

MINIMUM_VERSION_HOW = "its default context with `minimum_version` set (deploy/tls_options.py)"


@dataclass(frozen=True)
class MinimumVersionHook:
    """A server's context hook: its default context, with APP_TLS_MIN_VERSION set.
    Equal by value (configs compare), picklable (a supervised worker receives it)."""

    version: str

    def __call__(self, config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        try:
            context = default_factory()
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            # gunicorn's ASGI worker would log the error and serve cleartext on the TLS port: this
            # worker fails to boot instead, as every other profile's does (the server stops).
            logger.error("cannot load the TLS files, this worker stops: %s", error)  # noqa: TRY400 - one line, no traceback
            raise SystemExit(WORKER_BOOT_ERROR) from None
        context.minimum_version = minimum_version(self.version)
        return context


def minimum_version_hook(settings: Settings) -> MinimumVersionHook:
    """The context hook of APP_TLS_MIN_VERSION (gunicorn calls its hook only with TLS)."""
    return MinimumVersionHook(settings.tls_min_version)


def context_hook(settings: Settings) -> MinimumVersionHook | None:
    """uvicorn's context hook: None in cleartext, as uvicorn takes any hook for TLS."""
    return minimum_version_hook(settings) if settings.tls_enabled else None


def client_cert_reqs(settings: Settings) -> ssl.VerifyMode:
    """Mutual TLS: with a client CA, a client without a certificate it signed fails the handshake."""
    return ssl.CERT_REQUIRED if settings.tls_client_ca_file is not None else ssl.CERT_NONE


def path_or_none(path: Any) -> str | None:
    return None if path is None else str(path)
