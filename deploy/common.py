"""Small helpers shared by the adapters."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path

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


class UnsupportedSettingError(Exception):
    """A setting this server cannot honour; refused rather than silently ignored."""

    def __init__(self, server: str, variable: str, reason: str) -> None:
        super().__init__(f"{server} cannot honour {variable}: {reason}")


def refuse_if_set(server: str, settings: Settings, field: str, reason: str) -> None:
    """Refuse a setting the user chose explicitly that this server cannot honour.

    Its default stays allowed: it only describes what the server does anyway.
    """
    if field in settings.model_fields_set:
        raise UnsupportedSettingError(server, env_name(field), reason)


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


def refuse_ws_ping(server: str, settings: Settings, *, interval: bool, timeout: bool) -> None:
    """Refuse the WebSocket ping settings this server has no way to honour."""
    for field, cannot in (("ws_ping_interval", interval), ("ws_ping_timeout", timeout)):
        if cannot and getattr(settings, field) is not None:
            what = "pings" if field == "ws_ping_interval" else "a ping timeout"
            raise UnsupportedSettingError(
                server, env_name(field), f"{server} sends no WebSocket {what} of its own; unset it"
            )
