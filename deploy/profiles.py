"""Profile name -> the module that declares it, imported only when chosen: a missing server breaks no other.

Adding a server: one module under deploy/ that ends with a `PROFILE` (deploy/profile.py),
one line here, and its name in `ServerName` (service/settings.py).
"""

from __future__ import annotations

import importlib

from deploy.profile import Profile

PROFILES: dict[str, str] = {
    "uvicorn": "deploy.uvicorn",
    "hypercorn": "deploy.hypercorn",
    "gunicorn": "deploy.gunicorn",
    "gunicorn-asgi": "deploy.gunicorn_asgi",
    "granian": "deploy.granian",
}


def load_profile(name: str) -> Profile:
    profile = importlib.import_module(PROFILES[name]).PROFILE
    assert isinstance(profile, Profile), PROFILES[name]  # noqa: S101 - a programming error, not input
    return profile
