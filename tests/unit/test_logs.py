from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from deploy.profiles import PROFILES, load_profile
from service.access_log import ACCESS_LOGGER, AccessLog, http_version
from service.app import create_app
from service.log_writer import PIPE_BUF
from service.logs import ACCESS_FIELDS, JSON_FIELDS, NO_SERVER, JsonFormatter, ServerLoggers, log_config
from service.request_id import request_id_var
from service.settings import Settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    every_server = ServerLoggers(
        tuple(name for profile in PROFILES for name in load_profile(profile).loggers.messages),
        tuple(name for profile in PROFILES for name in load_profile(profile).loggers.access),
    )
    for name in log_config(Settings(), every_server)["loggers"]:
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate, logger.level = [], True, logging.NOTSET
    root.handlers, root.level = saved


def _configure(settings: Settings, server: ServerLoggers = NO_SERVER) -> None:
    logging.config.dictConfig(log_config(settings, server))


def test_json_line_has_the_fields_and_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    _configure(Settings(log_format="json", server="hypercorn"))
    token = request_id_var.set("req-id-for-test")
    try:
        logging.getLogger("service.example").warning("hello %s", "world")
    finally:
        request_id_var.reset(token)
    record = json.loads(capsys.readouterr().out.strip())
    assert record["message"] == "hello world"
    assert record["level"] == "WARNING"
    assert record["logger"] == "service.example"
    assert record["request_id"] == "req-id-for-test"
    assert record["server"] == "hypercorn"
    assert record["time"].endswith("+00:00")
    assert isinstance(record["pid"], int)


def test_error_with_traceback_is_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    _configure(Settings(log_format="json"))
    error = ValueError("boom")
    logging.getLogger("service.errors").error("failed", exc_info=(ValueError, error, None))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert "ValueError: boom" in json.loads(lines[0])["exc_info"]


def test_console_format_in_development(capsys: pytest.CaptureFixture[str]) -> None:
    _configure(Settings(env="development"))
    logging.getLogger("service.example").info("readable")
    line = capsys.readouterr().out.strip()
    assert "INFO" in line
    assert "service.example [-] readable" in line
    assert not line.startswith("{")


def test_format_defaults_follow_the_environment() -> None:
    assert Settings(env="production").effective_log_format == "json"
    assert Settings(env="development").effective_log_format == "console"


def test_a_server_extra_such_as_color_message_is_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    _configure(Settings(log_format="json"), load_profile("uvicorn").loggers)
    logging.getLogger("uvicorn.error").info("Started", extra={"color_message": "\x1b[36mStarted\x1b[0m"})
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {"time", "level", "logger", "message", "pid", "request_id", "server"}


def _access_lines(settings: Settings, scope: dict[str, Any], capfd: pytest.CaptureFixture[str]) -> list[str]:
    """The access lines a request writes, through the app's own access log on a real stdout."""
    _configure(settings)
    access_log = AccessLog(logging.getLogger(ACCESS_LOGGER), frozenset())

    async def request() -> None:
        token = request_id_var.set("access-line-test")
        try:
            access_log.log(scope, 404, 0.0012345)
        finally:
            request_id_var.reset(token)

    asyncio.run(request())
    return capfd.readouterr().out.splitlines()


SCOPE = {"method": "GET", "path": "/items/1", "http_version": "1.1", "client": ("10.0.0.7", 5123)}


def test_the_access_line_has_the_fields_of_a_json_record_in_the_same_order(
    capfd: pytest.CaptureFixture[str],
) -> None:
    [line] = _access_lines(Settings(log_format="json", server="granian"), SCOPE, capfd)
    built = json.loads(line)
    assert list(built) == [*JSON_FIELDS[:4], *ACCESS_FIELDS, *JSON_FIELDS[4:]]
    assert built == {
        "level": "INFO",
        "logger": "service.access",
        "message": '10.0.0.7:5123 - "GET /items/1 HTTP/1.1" 404',
        "pid": os.getpid(),
        "method": "GET",
        "path": "/items/1",
        "status": 404,
        "duration_ms": 1.234,
        "client": "10.0.0.7:5123",
        "scheme": "http",
        "version": "1.1",
        "request_id": "access-line-test",
        "server": "granian",
        "time": built["time"],
    }
    assert abs(datetime.fromisoformat(built["time"]).timestamp() - time.time()) < 60
    # The formatter renders a record of the same request with the same keys, in the same order.
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "m", (), None)
    record.__dict__.update({name: built[name] for name in ACCESS_FIELDS}, request_id="r", server="s")
    assert list(json.loads(JsonFormatter().format(record))) == list(built)


def test_a_very_long_path_is_cut_so_the_line_stays_within_pipe_buf(capfd: pytest.CaptureFixture[str]) -> None:
    path = "/" + "\x01" * 20_000  # escaped as \u0001: six bytes each
    [line] = _access_lines(Settings(log_format="json"), {**SCOPE, "path": path}, capfd)
    assert len(line.encode()) + 1 <= PIPE_BUF
    assert json.loads(line)["path"].endswith("...(cut)")


def test_console_logs_get_the_access_line_through_logging(capfd: pytest.CaptureFixture[str]) -> None:
    [line] = _access_lines(Settings(env="development"), SCOPE, capfd)
    assert 'service.access [access-line-test] 10.0.0.7:5123 - "GET /items/1 HTTP/1.1" 404 1.2 ms' in line


def test_a_console_access_line_stays_one_line_whatever_the_path(capfd: pytest.CaptureFixture[str]) -> None:
    """A decoded %0A in the path would start a forged line of its own in a text log."""
    [line] = _access_lines(Settings(env="development"), {**SCOPE, "path": "/a\nFORGED b\x1b[2J"}, capfd)
    assert '"GET /a\\nFORGED b\\x1b[2J HTTP/1.1" 404' in line


def test_an_access_record_keeps_the_fields_the_access_log_gives_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _configure(Settings(log_format="json"))
    extra = {"method": "GET", "path": "/ws", "status": 101, "duration_ms": 5.0, "client": "-", "frames": 3}
    logging.getLogger(ACCESS_LOGGER).info("session", extra=extra)
    logging.getLogger("service.example").info("other", extra={"frames": 3})
    access, other = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert access["frames"] == 3
    assert set(access) == {*JSON_FIELDS, *ACCESS_FIELDS, "frames"}
    assert "frames" not in other


@pytest.mark.parametrize(("written", "logged"), [("1.1", "1.1"), ("2", "2"), ("1.0", "1.0"), ("1", "1.0")])
def test_access_line_spells_the_http_version_as_asgi_does(written: str, logged: str) -> None:
    """granian 2.8 writes HTTP/1.0 as "1": the line says HTTP/1.0 whatever the server."""
    assert http_version({**SCOPE, "http_version": written}) == logged


async def _get(app: Any, path: str) -> None:
    """One request to the app, called directly: no event-loop iteration passes during it."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("10.0.0.7", 5123),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(scope, receive, send)


def test_access_lines_wait_for_the_iterations_end_but_never_for_a_later_line(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Access lines are written once per event-loop iteration (service/request_records.py); a line
    written meanwhile still comes after the access lines of the requests that ended before it."""
    settings = Settings(log_format="json")
    _configure(settings)
    app = create_app(settings)

    async def two_requests_and_a_warning_in_one_iteration() -> str:
        await _get(app, "/")
        before_the_iteration_ends = capfd.readouterr().out
        logging.getLogger("service.example").warning("in between")
        await _get(app, "/missing")
        await asyncio.sleep(0)
        return before_the_iteration_ends

    assert asyncio.run(two_requests_and_a_warning_in_one_iteration()) == ""
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [line.get("path", line["message"]) for line in lines] == ["/", "in between", "/missing"]
    assert [line.get("status") for line in lines] == [200, None, 404]
    assert lines[0]["request_id"] != lines[2]["request_id"]


def test_a_console_access_line_carries_the_time_its_request_ended(capfd: pytest.CaptureFixture[str]) -> None:
    """The line is written at the end of the loop iteration, but its time is when the request ended."""
    settings = Settings(log_format="console")
    _configure(settings)
    app = create_app(settings)

    async def a_request_in_a_long_iteration() -> tuple[float, float]:
        started = time.time()
        await _get(app, "/")
        ended = time.time()
        time.sleep(0.3)  # noqa: ASYNC251 - a long iteration: its end, where the line is written, comes later
        await asyncio.sleep(0)
        return started, ended

    started, ended = asyncio.run(a_request_in_a_long_iteration())
    [line] = [line for line in capfd.readouterr().out.splitlines() if '"GET / HTTP/1.1" 200' in line]
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # milliseconds, cut
    assert started - 0.001 <= stamp <= ended
