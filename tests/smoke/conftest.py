from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.profiles import PROFILES
from devkit.process import running_server


@pytest.fixture(scope="session")
def base_url_option(request: pytest.FixtureRequest) -> str | None:
    value = request.config.getoption("--base-url")
    return str(value).rstrip("/") if value else None


@pytest.fixture
def local_only(base_url_option: str | None) -> None:
    if base_url_option:
        pytest.skip("starts its own server process; not run against --base-url")


@pytest.fixture(scope="module", params=sorted(PROFILES))
def base_url(request: pytest.FixtureRequest, base_url_option: str | None) -> Iterator[str]:
    """Each profile serving the real app with default settings, or the given deployment."""
    if base_url_option:
        if request.param != sorted(PROFILES)[0]:
            pytest.skip("--base-url: the deployment is checked once")
        yield base_url_option
        return
    with running_server(request.param) as server:
        yield server.base_url
