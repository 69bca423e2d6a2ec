"""X-Forwarded-For/-Proto over real HTTP: ignored from an untrusted peer, honoured from a trusted one."""

from __future__ import annotations

import httpx
import pytest

from deploy.profiles import PROFILES
from devkit.process import ServerProcess, running_server
from tests.resilience.conftest import UNTRUSTED_PROXY
from tests.resilience.support import RESILIENCE_APP

pytestmark = pytest.mark.resilience

SPOOFED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


def test_forwarded_headers_from_untrusted_peer_are_ignored(limited: ServerProcess) -> None:
    assert limited.env["APP_FORWARDED_ALLOW_IPS"] == UNTRUSTED_PROXY  # we connect from 127.0.0.1
    response = httpx.get(limited.base_url + "/whoami", headers=SPOOFED, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"client": "127.0.0.1", "scheme": "http"}
    assert "strict-transport-security" not in response.headers


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_forwarded_headers_from_trusted_peer_are_honoured(profile: str) -> None:
    env = {"APP_ASGI_APP": RESILIENCE_APP, "APP_WORKERS": "1", "APP_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    with running_server(profile, env) as server:
        spoofed = httpx.get(server.base_url + "/whoami", headers=SPOOFED, timeout=10)
        plain = httpx.get(server.base_url + "/whoami", timeout=10)
    assert spoofed.json() == {"client": "203.0.113.9", "scheme": "https"}
    assert spoofed.headers["strict-transport-security"].startswith("max-age=")
    assert plain.json() == {"client": "127.0.0.1", "scheme": "http"}
    assert "strict-transport-security" not in plain.headers
