"""Rooms with the default broker (in the process) on every profile: one worker serves a room;
the in-process broker with two workers is refused at start-up in one line.

Rooms across workers and instances, on a real Redis: tests/resilience/test_rooms.py.
"""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.sync.client import connect

from deploy.profiles import PROFILES
from devkit.process import refused_at_startup, running_server
from tests.smoke.test_realtime import access_line, eventually, metric, scrape

pytestmark = [pytest.mark.smoke, pytest.mark.demo_routes, pytest.mark.usefixtures("local_only")]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_default_broker_serves_a_room_on_one_worker(profile: str) -> None:
    with running_server(profile, {"APP_WORKERS": "1", "APP_LOG_FORMAT": "json"}) as server:
        url = f"ws://127.0.0.1:{server.port}/rooms/lobby"
        before = scrape(server)
        with (
            connect(url, additional_headers={"X-Request-ID": "room-alice"}) as alice,
            connect(url) as bob,
            httpx.stream("GET", f"{server.base_url}/rooms/lobby/events", timeout=10) as stream,
        ):
            assert stream.status_code == 200
            for text in ("one", "two"):
                alice.send(text)
            posted = httpx.post(f"{server.base_url}/rooms/lobby/messages", json={"message": "three"})
            assert posted.status_code == 202
            for member in (alice, bob):
                assert [member.recv(timeout=5) for _ in range(3)] == ["one", "two", "three"]
            data: list[str] = []
            lines = stream.iter_lines()
            while len(data) < 3:
                line = next(lines)
                if line.startswith("data: "):
                    data.append(json.loads(line[6:])["message"])
            assert data == ["one", "two", "three"]
        line = eventually(lambda: access_line(server, "room-alice"), "alice's access line")
        assert (line["path"], line["close_code"], line["messages_in"], line["messages_out"]) == (
            "/rooms/lobby",
            1000,
            2,
            3,
        )
        after = scrape(server)
        assert (
            metric(after, "rooms_messages_published_total") - metric(before, "rooms_messages_published_total")
            == 3
        )
        assert (
            metric(after, "rooms_messages_delivered_total") - metric(before, "rooms_messages_delivered_total")
            == 9
        )
        assert metric(after, "rooms_broker_connected") == 1


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_in_process_broker_is_refused_with_two_workers(profile: str) -> None:
    line = refused_at_startup(profile, {"APP_WORKERS": "2", "APP_BROKER_URL": "memory://"})
    assert "APP_BROKER_URL=memory:// cannot reach the other workers (APP_WORKERS=2)" in line
