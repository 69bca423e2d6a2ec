"""Small helpers shared by the adapters."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from service.settings import Settings, env_name

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
