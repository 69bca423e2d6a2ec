"""Profile name -> adapter module, imported only when chosen (a missing server never breaks another)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, cast

from service.settings import Settings


class Adapter(Protocol):
    """What every `deploy/<server>.py` module provides."""

    def native_config(self, settings: Settings) -> Mapping[str, Any]:
        """The server's own configuration, built from `settings` only."""
        ...

    def run(self, settings: Settings) -> int:
        """Run the server in this process until it stops; return the exit status."""
        ...


PROFILES: dict[str, str] = {
    "uvicorn": "deploy.uvicorn",
    "hypercorn": "deploy.hypercorn",
    "gunicorn": "deploy.gunicorn",
    "gunicorn-asgi": "deploy.gunicorn_asgi",
    "granian": "deploy.granian",
}


def load_adapter(profile: str) -> Adapter:
    return cast(Adapter, importlib.import_module(PROFILES[profile]))
