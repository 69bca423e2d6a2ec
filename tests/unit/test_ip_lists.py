"""IP allow-lists (APP_FORWARDED_ALLOW_IPS, APP_METRICS_ALLOW_IPS): who matches."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.ip_lists import IPAllowList
from service.settings import Settings


@pytest.mark.parametrize(
    ("items", "host", "listed"),
    [
        (["*"], "203.0.113.9", True),
        (["*"], None, True),
        (["10.0.0.1"], "10.0.0.1", True),
        (["10.0.0.1"], "10.0.0.2", False),
        (["10.0.0.0/8"], "10.200.1.1", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["::1"], "::1", True),
        (["::1"], "0:0:0:0:0:0:0:1", True),  # one address, however it is written
        (["fe80::1"], "fe80::1%eth0", False),  # another scope: another address, as in uvicorn
        (["fe80::/64"], "fe80::1%eth0", True),  # a network: whatever the scope
        (["2001:db8::/32"], "2001:db8:1::5", True),
        (["10.0.0.0/8"], "::ffff:10.0.0.1", False),  # another address family
        (["10.0.0.0/8", "::1"], "testclient", False),  # not an address
        (["10.0.0.0/8"], "", False),
        (["10.0.0.0/8"], None, False),
        (["10.0.0.1"], "10.0.0.1" + " " * 300, False),  # too long to cache, and no address
    ],
)
def test_membership(items: list[str], host: str | None, listed: bool) -> None:
    assert (host in IPAllowList(items)) is listed


def test_metrics_follow_their_allow_list() -> None:
    settings = Settings(metrics_allow_ips="203.0.113.0/24")  # type: ignore[arg-type]
    with TestClient(create_app(settings), client=("203.0.113.9", 1000)) as client:
        assert client.get("/metrics").status_code == 200
    with TestClient(create_app(settings), client=("10.1.2.3", 1000)) as client:
        assert client.get("/metrics").status_code == 403
