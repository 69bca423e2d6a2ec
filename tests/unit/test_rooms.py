"""Rooms without a server: the bounded queue, the in-process broker through the app, the settings."""

from __future__ import annotations

import asyncio
import base64

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from service.app import create_app
from service.room_hub import BROKER_UNAVAILABLE, TOO_SLOW, RoomHub, Subscriber
from service.session_metrics import WEBSOCKET
from service.settings import SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("isolated_env")
NONCE = {"sec-websocket-key": base64.b64encode(bytes(16)).decode()}  # what a real client sends


def test_a_slow_subscriber_is_ended_not_grown() -> None:
    subscriber = Subscriber("lobby", WEBSOCKET, limit_bytes=10)
    subscriber.offer("a" * 50, 50)  # one message always fits an empty queue
    subscriber.offer("b" * 5, 5)
    assert subscriber.end_code == TOO_SLOW
    assert not subscriber.queue
    assert subscriber.queued_bytes == 0
    assert asyncio.run(subscriber.next_message()) is None


def test_messages_come_out_in_order_within_the_bound() -> None:
    subscriber = Subscriber("lobby", WEBSOCKET, limit_bytes=10)
    for text in ("one", "two", "six"):
        subscriber.offer(text, 3)

    async def drain() -> list[str | None]:
        return [await subscriber.next_message() for _ in range(3)]

    assert asyncio.run(drain()) == ["one", "two", "six"]
    assert subscriber.end_code is None


def test_losing_the_broker_ends_and_forgets_every_subscriber() -> None:
    hub = RoomHub()
    first, second = Subscriber("a", WEBSOCKET, 100), Subscriber("a", WEBSOCKET, 100)
    assert hub.add(first)
    assert not hub.add(second)
    hub.end_all(BROKER_UNAVAILABLE)
    assert (first.end_code, second.end_code) == (BROKER_UNAVAILABLE, BROKER_UNAVAILABLE)
    # Whoever joins next subscribes the room afresh.
    assert hub.add(Subscriber("a", WEBSOCKET, 100))
    assert not hub.remove(first)


def test_the_in_process_broker_is_refused_with_several_workers() -> None:
    with pytest.raises(SettingsError, match=r"^invalid settings: APP_BROKER_URL=memory:// cannot reach"):
        load_settings(broker_url="memory://", workers=2)
    with pytest.raises(SettingsError, match="give it as APP_BROKER_PASSWORD"):
        load_settings(broker_url="redis://user:hunter2@127.0.0.1:6379/0", workers=1)


def test_a_room_reaches_every_member_in_order_and_plain_http_publishes() -> None:
    app = create_app(load_settings(workers=1, ws_max_message_bytes=1000))
    with TestClient(app) as client:
        with (
            client.websocket_connect("/rooms/lobby", headers=NONCE) as alice,
            client.websocket_connect("/rooms/lobby", headers=NONCE) as bob,
        ):
            for text in ("one", "two"):
                alice.send_text(text)
            assert client.post("/rooms/lobby/messages", json={"message": "three"}).status_code == 202
            for member in (alice, bob):
                assert [member.receive_text() for _ in range(3)] == ["one", "two", "three"]
        assert client.post("/rooms/bad room/messages", json={"message": "x"}).status_code == 400
        assert client.post("/rooms/lobby/messages", json={"message": "x" * 1001}).status_code == 413
        assert client.post("/rooms/lobby/messages", json={"text": "x"}).status_code == 422


def test_without_a_shared_broker_several_workers_answer_503_naming_the_setting() -> None:
    app = create_app(load_settings(workers=2))
    with TestClient(app) as client:
        answer = client.post("/rooms/lobby/messages", json={"message": "x"})
        assert answer.status_code == 503
        assert "set APP_BROKER_URL" in answer.json()["detail"]
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect("/rooms/lobby", headers=NONCE),
        ):
            pass
        assert refused.value.status_code == 503
        assert client.get("/").status_code == 200


def test_the_websocket_checks_of_ws_apply_to_rooms() -> None:
    app = create_app(load_settings(workers=1, ws_max_connections=1))
    with TestClient(app) as client:
        with (
            pytest.raises(WebSocketDenialResponse) as cross_site,
            client.websocket_connect("/rooms/lobby", headers={**NONCE, "origin": "https://evil.example"}),
        ):
            pass
        assert cross_site.value.status_code == 403
        with pytest.raises(WebSocketDenialResponse) as no_key, client.websocket_connect("/rooms/lobby"):
            pass
        assert no_key.value.status_code == 400
        with (
            pytest.raises(WebSocketDenialResponse) as bad_name,
            client.websocket_connect("/rooms/-x", headers=NONCE),
        ):
            pass
        assert bad_name.value.status_code == 400
        with client.websocket_connect(
            "/ws", headers=NONCE
        ):  # the per-worker cap counts rooms and /ws together
            with (
                pytest.raises(WebSocketDenialResponse) as full,
                client.websocket_connect("/rooms/lobby", headers=NONCE),
            ):
                pass
            assert full.value.status_code == 503
