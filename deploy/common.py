"""Small helpers shared by the adapters."""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
from pathlib import Path
from typing import Any

from service.settings import Settings, SettingsError, env_name

SHM_DIR = Path("/dev/shm")  # noqa: S108 - a tmpfs, not a world-writable temp dir we create files in


def bind_address(host: str, port: int) -> str:
    """`host:port`, with IPv6 literals bracketed as every server expects."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def check_app_module(settings: Settings) -> None:
    """Refuse an APP_ASGI_APP whose module cannot be found, before any server starts.

    Each server would otherwise fail in its own way, most with a traceback from every
    worker. Only the module is looked up (its parent packages are imported): importing
    the app here would run it in the launcher, which gunicorn's workers then inherit.
    """
    module = settings.asgi_app.partition(":")[0]
    try:
        if importlib.util.find_spec(module) is not None:
            return
        problem = f"no module named {module!r}"
    except ImportError as error:  # a parent package is missing or fails to import
        problem = str(error)
    raise SettingsError(
        f"{env_name('asgi_app')}={settings.asgi_app!r}: {problem} "
        "(allowed: an import string `module:attribute` naming the ASGI app, importable from here)"
    )


def import_app(target: str) -> Any:
    """The object an import string `module:attribute` (APP_ASGI_APP) names, imported here."""
    module, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value
