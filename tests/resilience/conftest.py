from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.profile import Refused
from deploy.profiles import PROFILES, load_profile
from devkit.process import ServerProcess, running_server
from tests.resilience.support import RESILIENCE_APP, Report

# Limits of the shared server: small enough to trip from a test, one worker so the
# per-worker concurrency limit is the server's.
MAX_BODY_SIZE = 1024
MAX_CONCURRENCY = 4
UNTRUSTED_PROXY = "10.1.2.3"
# Short enough to see silent and trickling connections cut within the slow-client test.
HEAD_TIMEOUT = 3
# Well past it, so that test tells the two deadlines apart (granian has no keep-alive setting).
KEEPALIVE_TIMEOUT = 10
# Profiles whose server cannot honour APP_REQUEST_HEAD_TIMEOUT (and refuse it when set), with the
# reason: their slow-client test is a strict xfail. None today: every profile has the deadline.
NO_HEAD_TIMEOUT: dict[str, str] = {}


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    path = tmp_path_factory.getbasetemp() / "resilience.json"
    result = Report(path)
    yield result
    if result.entries:
        print(f"\n[resilience] figures written to {path}")


@pytest.fixture(scope="session", params=sorted(PROFILES))
def limited(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One server per profile, shared by the limits, forwarding and hostile-input tests."""
    env = {
        "APP_ASGI_APP": RESILIENCE_APP,
        "APP_WORKERS": "1",
        "APP_ACCESS_LOG": "false",
        "APP_MAX_BODY_SIZE": str(MAX_BODY_SIZE),
        "APP_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        "APP_FORWARDED_ALLOW_IPS": UNTRUSTED_PROXY,
    }
    if request.param not in NO_HEAD_TIMEOUT:
        env["APP_REQUEST_HEAD_TIMEOUT"] = str(HEAD_TIMEOUT)
    if not isinstance(load_profile(request.param).settings.get("keepalive_timeout"), Refused):
        env["APP_KEEPALIVE_TIMEOUT"] = str(KEEPALIVE_TIMEOUT)
    with running_server(request.param, env) as server:
        yield server
