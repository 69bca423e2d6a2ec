"""The one list of servers: profile name -> the module that declares it, imported only when chosen.

Everything else that names the servers derives from this table: the settings' allowed values
(service/settings.py), `make run-<profile>`, the CI workflow's matrices, the tests' parameters.
It imports nothing of the project, so that the settings can read it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploy.profile import Profile

PROFILES: dict[str, str] = {
    "uvicorn": "deploy.uvicorn",
    "hypercorn": "deploy.hypercorn",
    "gunicorn": "deploy.gunicorn",
    "gunicorn-asgi": "deploy.gunicorn_asgi",
    "granian": "deploy.granian",
}


def load_profile(name: str) -> Profile:
    from deploy.profile import Profile  # noqa: PLC0415 - the profile type imports the settings

    profile = importlib.import_module(PROFILES[name]).PROFILE
    assert isinstance(profile, Profile), PROFILES[name]  # noqa: S101 - a programming error, not input
    return profile
