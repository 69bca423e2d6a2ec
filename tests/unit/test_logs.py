from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterator

import pytest

from service.logs import log_config
from service.middleware.request_id import request_id_var
from service.settings import Settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    for name in log_config(Settings())["loggers"]:
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate, logger.level = [], True, logging.NOTSET
    root.handlers, root.level = saved


def _configure(settings: Settings) -> None:
    logging.config.dictConfig(log_config(settings))


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
