"""Long-lived connections without a server: settings, the Origin rule, the stop, the reloader's checks."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from deploy.profile import UnsupportedSettingError
from deploy.profiles import load_profile
from deploy.reload import changed, syntax_error
from service.api import event_stream
from service.api.websocket_handshake import handshake_problem
from service.app import create_app
from service.drain_flag import DrainState
from service.session_metrics import EVENT_STREAM, WEBSOCKET
from service.sessions import RealtimeState, begin_stop_of, sessions_of
from service.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.mark.parametrize(
    ("allowed", "origin", "host", "expected"),
    [
        ((), None, "api.example.com", True),  # not a browser
        ((), "https://api.example.com", "api.example.com", True),  # same origin
        ((), "https://evil.example", "api.example.com", False),
        ((), "null", "api.example.com", False),
        (("https://app.example.com",), "https://APP.example.com", "api.example.com", True),
        (("https://app.example.com",), "https://api.example.com", "api.example.com", False),
        (("*",), "https://evil.example", "api.example.com", True),
    ],
)
def test_origin_rule(allowed: tuple[str, ...], origin: str | None, host: str, expected: bool) -> None:
    state = RealtimeState(DrainState(), 1024, 10, allowed)
    assert state.origin_allowed(origin, host) is expected


def test_stop_runs_every_callback_once_and_refuses_new_sessions() -> None:
    state = RealtimeState(DrainState(), 1024, 1)
    calls: list[str] = []
    state.stop_callbacks.add(lambda: calls.append("told"))
    assert not state.refusing_new()
    state.begin_stop()
    state.begin_stop()
    assert calls == ["told"]
    assert state.refusing_new()


def test_a_stop_held_for_the_sessions_ends_when_the_last_one_has_ended() -> None:
    state = RealtimeState(DrainState(), 1024, 0)
    ended: list[str] = []

    async def scenario() -> int:
        loop = asyncio.get_running_loop()

        def session(kind: str) -> None:
            def on_stop() -> None:  # it ends a moment after it is told, as a close frame goes out
                loop.call_later(0.05, lambda: (state.session_ended(kind, on_stop), ended.append(kind)))

            state.session_started(kind, on_stop)

        session(WEBSOCKET)
        session(EVENT_STREAM)
        async with asyncio.timeout(10):  # bounds a failure; the hold's own bound is far longer
            return await state.stop_and_wait(bound=60)

    assert asyncio.run(scenario()) == 0
    assert sorted(ended) == [EVENT_STREAM, WEBSOCKET]
    assert (state.open_websockets, state.open_streams, state.stop_callbacks) == (0, 0, set())


def test_a_stop_held_for_the_sessions_gives_up_at_its_bound() -> None:
    state = RealtimeState(DrainState(), 1024, 0)
    told: list[str] = []
    state.session_started(WEBSOCKET, lambda: told.append("a peer that never answers"))
    assert asyncio.run(asyncio.wait_for(state.stop_and_wait(bound=0.1), 10)) == 1
    assert told == ["a peer that never answers"]
    assert state.refusing_new()


def test_draining_refuses_new_sessions_and_the_cap_counts_open_ones() -> None:
    drain = DrainState()
    state = RealtimeState(drain, 1024, 1)
    state.open_websockets = 1
    assert state.websockets_full()
    drain.draining = True
    assert state.refusing_new()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"APP_WS_PING_TIMEOUT": "5"}, "APP_WS_PING_TIMEOUT needs APP_WS_PING_INTERVAL"),
        ({"APP_ENV": "production", "APP_WS_ALLOWED_ORIGINS": "*"}, "APP_WS_ALLOWED_ORIGINS=*"),
        ({"APP_ENV": "production", "APP_RELOAD": "true"}, "APP_RELOAD"),
        ({"APP_WS_ALLOWED_ORIGINS": "evil"}, "APP_WS_ALLOWED_ORIGINS"),
        ({"APP_WS_MAX_MESSAGE_BYTES": "10"}, "APP_WS_MAX_MESSAGE_BYTES"),
    ],
)
def test_realtime_settings_are_validated(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=needle.replace("*", r"\*")):
        load_settings()


# Starlette's TestClient sends "testserver==" unless told otherwise: not a nonce (RFC 6455 4.1).
NONCE = {"sec-websocket-key": base64.b64encode(os.urandom(16)).decode()}


def test_websocket_refusals_in_process() -> None:
    client = TestClient(create_app(Settings(ws_max_connections=1)))
    with pytest.raises(WebSocketDenialResponse) as foreign:
        client.websocket_connect("/ws", headers={**NONCE, "origin": "https://evil.example"}).__enter__()
    assert foreign.value.status_code == 403
    with pytest.raises(WebSocketDenialResponse) as not_a_nonce:
        client.websocket_connect("/ws").__enter__()
    assert not_a_nonce.value.status_code == 400
    assert "Sec-WebSocket-Key" in not_a_nonce.value.json()["detail"]
    with client.websocket_connect("/ws", headers=NONCE) as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        with pytest.raises(WebSocketDenialResponse) as full:
            client.websocket_connect("/ws", headers=NONCE).__enter__()
        assert full.value.status_code == 503
        assert full.value.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("http_version", "keys", "refused"),
    [
        ("1.1", [b"dGhlIHNhbXBsZSBub25jZQ=="], False),  # RFC 6455's own example
        ("1.1", [b" dGhlIHNhbXBsZSBub25jZQ== "], False),  # whitespace around a field value is not part of it
        ("1.1", [], True),
        ("1.1", [b"not-base64!"], True),
        ("1.1", [b"dGVzdHNlcnZlcg=="], True),  # base64, but of 10 bytes
        ("1.1", [b"dGhlIHNhbXBsZSBub25jZQ"], True),  # unpadded
        ("1.1", [b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZQ=="], True),
        ("1.0", [b"dGhlIHNhbXBsZSBub25jZQ=="], True),
        ("1", [b"dGhlIHNhbXBsZSBub25jZQ=="], True),  # granian's spelling of HTTP/1.0
        ("2", [], False),  # RFC 8441: no key over HTTP/2
    ],
)
def test_handshake_rule(http_version: str, keys: list[bytes], refused: bool) -> None:
    headers = [(b"host", b"x"), *((b"sec-websocket-key", key) for key in keys)]
    problem = handshake_problem({"type": "websocket", "http_version": http_version, "headers": headers})
    assert (problem is not None) is refused, problem


def test_reloader_sees_changes_and_syntax_errors(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("x = 1\n")
    bad.write_text("def broken(:\n")
    assert changed({good: 1}, {good: 2, bad: 1}) == sorted([good, bad])
    assert changed({good: 1}, {good: 1}) == []
    assert syntax_error([good]) is None
    problem = syntax_error([good, bad])
    assert problem is not None
    assert problem.startswith(f"{bad}:1:")


@pytest.mark.parametrize(
    ("profile", "ping", "refused"),
    [
        ("granian", {"ws_ping_interval": 10.0}, "APP_WS_PING_INTERVAL"),
        ("gunicorn-asgi", {"ws_ping_interval": 10.0}, "APP_WS_PING_INTERVAL"),
        ("hypercorn", {"ws_ping_interval": 10.0, "ws_ping_timeout": 5.0}, "APP_WS_PING_TIMEOUT"),
    ],
)
def test_ping_settings_refused_where_the_server_cannot_ping(
    profile: str, ping: dict[str, float], refused: str
) -> None:
    with pytest.raises(UnsupportedSettingError, match=refused):
        load_profile(profile).launch_config(Settings(**ping))  # type: ignore[arg-type]


def test_ping_and_message_limit_reach_the_servers_that_have_them() -> None:
    settings = Settings(ws_ping_interval=10.0, ws_ping_timeout=5.0, ws_max_message_bytes=4096)
    uvicorn = load_profile("uvicorn").launch_config(settings).server
    assert (uvicorn["ws_ping_interval"], uvicorn["ws_ping_timeout"], uvicorn["ws_max_size"]) == (
        10.0,
        5.0,
        4096,
    )
    assert uvicorn["ws"] == "websockets-sansio"
    gunicorn = load_profile("gunicorn").launch_config(settings).server["uvicorn_worker"]
    assert (gunicorn["ws_ping_interval"], gunicorn["ws_max_size"]) == (10.0, 4096)
    hypercorn = (
        load_profile("hypercorn")
        .launch_config(Settings(ws_ping_interval=10.0, ws_max_message_bytes=4096))
        .server
    )
    assert (hypercorn["websocket_ping_interval"], hypercorn["websocket_max_message_size"]) == (10.0, 4096)
    asgi = load_profile("gunicorn-asgi").launch_config(Settings(ws_max_message_bytes=4096)).server
    assert asgi["gunicorn"]["websocket_max_message_size"] == 4096


def test_the_stop_reaches_the_sessions_of_that_app_only_through_its_middleware() -> None:
    first, second = create_app(Settings()), create_app(Settings())

    class Wrapper:  # an adapter's ASGI wrapper (deploy/uvicorn.py RequestCount), keeping `.app`
        def __init__(self, app: object) -> None:
            self.app = app

    assert sessions_of(Wrapper(Wrapper(first))) is first.state.realtime
    assert sessions_of(Wrapper(object())) is None  # APP_ASGI_APP may name any ASGI app
    begin_stop_of(Wrapper(first))
    assert first.state.realtime.stopping_now
    assert not second.state.realtime.stopping_now  # no process-wide registry


def test_attach_chains_onto_the_servers_signal_handler_and_detach_gives_it_back() -> None:
    state = RealtimeState(DrainState(), 1024, 0)
    server_saw: list[int] = []

    def server_handler(signum: int, frame: object) -> None:
        server_saw.append(signum)

    original = signal.signal(signal.SIGTERM, server_handler)
    try:

        async def scenario() -> None:
            told = asyncio.Event()
            state.session_started(WEBSOCKET, told.set)
            state.attach(asyncio.get_running_loop())
            assert signal.getsignal(signal.SIGTERM) is not server_handler
            os.kill(os.getpid(), signal.SIGTERM)
            async with asyncio.timeout(10):
                await told.wait()  # the stop began on the loop, from the handler
            state.detach()

        asyncio.run(scenario())
        assert server_saw == [signal.SIGTERM]  # the server's own handler still ran
        assert signal.getsignal(signal.SIGTERM) is server_handler
    finally:
        signal.signal(signal.SIGTERM, original)


def test_an_idle_event_stream_pings_once_per_ping_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first event at once, the next one 10 s later: in between, a ping each
    # STREAM_PING_SECONDS of silence (shortened here), and nothing else.
    monkeypatch.setattr(event_stream, "STREAM_PING_SECONDS", 0.1)
    app = create_app(Settings())
    scope = {"type": "http", "app": app, "state": {}}
    written: list[bytes] = []

    async def scenario() -> None:
        disconnected = asyncio.Event()

        async def receive() -> dict[str, object]:
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.body":
                written.append(message["body"])  # type: ignore[arg-type]

        stream = asyncio.ensure_future(event_stream.EventStream(1, 10.0)(scope, receive, send))
        await asyncio.sleep(0.55)
        disconnected.set()
        await asyncio.wait_for(stream, 5)

    asyncio.run(scenario())
    assert written[0].startswith(b"id: 1\n")
    pings = written[1:]
    assert set(pings) == {b": ping\n\n"}
    assert 2 <= len(pings) <= 5, written  # at 0.1, 0.2, 0.3, 0.4 and 0.5 s (later on a busy machine)
    assert scope["state"]["events_sent"] == 1
