"""The in-process measure of the WebSocket echo (bench/inprocess.py) measures an echo, or nothing."""

from __future__ import annotations

from typing import Any

import pytest

from bench import inprocess
from service.app import create_app
from service.settings import Settings


@pytest.mark.parametrize("which", ["bare FastAPI", "service"])
def test_every_message_goes_through_the_app_and_back(which: str) -> None:
    app = inprocess._bare() if which == "bare FastAPI" else create_app(Settings(env="production"))
    assert inprocess._time_per_message(app, sessions=3, messages=5) > 0


def test_an_app_that_does_not_echo_gives_no_figure() -> None:
    async def refuses(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    with pytest.raises(RuntimeError, match="sent 0 of 5 messages back"):
        inprocess._time_per_message(refuses, sessions=1, messages=5)
