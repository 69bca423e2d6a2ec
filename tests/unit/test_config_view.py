"""`python -m deploy config`: where each value came from, and what the chosen server does with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import config_view
from deploy.profiles import load_profile
from service.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("isolated_env")


def _rows(text: str) -> dict[str, list[str]]:
    """The table's rows by variable: value, source and what happens, split on runs of two spaces."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("APP_"):
            cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
            rows[cells[0]] = cells[1:]
    return rows


def test_each_value_is_traced_to_the_source_that_gave_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "broker_password").write_text("s3cret")
    (tmp_path / ".env").write_text("APP_LOG_LEVEL=debug\nAPP_PORT=9000\n")
    monkeypatch.setenv("APP_PORT", "9001")  # the environment wins over .env
    monkeypatch.setenv("APP_BROKER_URL", "redis://127.0.0.1:6379/0")
    settings = load_settings(env_file=Path(".env"), secrets_dir=secrets, access_log=False)
    assert settings.port == 9001
    assert {name: settings.source_of(name) for name in ("port", "log_level", "broker_password")} == {
        "port": "environment",
        "log_level": ".env",
        "broker_password": "secret file",
    }
    assert settings.source_of("access_log") == "argument"
    assert settings.source_of("host") == "default"
    assert settings.source_of("workers") == "default, computed"  # the CPUs this process may use


def test_the_concise_view_says_what_the_server_does_with_each_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_PORT", "9001")
    monkeypatch.setenv("APP_DOCS_ENABLED", "true")  # set, and the same on every server
    monkeypatch.setenv("APP_WORKERS", "1")
    monkeypatch.setenv("APP_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("APP_BROKER_PASSWORD", "s3cret")
    settings = load_settings(env_file=None)
    text = config_view.concise(load_profile("granian"), settings, named_on_command_line=True)
    rows = _rows(text)
    assert rows["APP_PORT"] == ["9001", "environment", "native `port`"]
    assert rows["APP_DOCS_ENABLED"] == ["true", "environment", "the app or the launcher, as on every server"]
    assert rows["APP_SERVER"][1] == "command line"
    assert rows["APP_MAX_REQUESTS"][:2] == ["0", "default"]
    assert rows["APP_MAX_REQUESTS"][2].startswith("not applied: granian recycles workers")
    assert rows["APP_BROKER_PASSWORD"][:2] == ["(set, secret)", "environment"]
    assert "s3cret" not in text
    assert "APP_ROOT_PATH" not in rows  # at its default and alike on every server: docs/settings.md
    # Every server takes part in the HTTP versions: what it serves, from its declaration.
    assert rows["APP_HTTP_VERSIONS"] == ["(unset)", "default", "serves http/1.1 in cleartext"]
    hypercorn = config_view.concise(load_profile("hypercorn"), settings, named_on_command_line=False)
    assert _rows(hypercorn)["APP_HTTP_VERSIONS"][2] == "serves http/1.1,h2c in cleartext"
    assert len(text.splitlines()) < 60  # it fits a terminal; --full has the rest


def test_a_setting_the_server_cannot_honour_is_the_one_line_refusal(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "config", "granian"],
        cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT), "APP_MAX_REQUESTS": "100"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "APP_MAX_REQUESTS" in result.stderr


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    # `make config | head`: the reader has closed the pipe before the last line is written (here
    # before the first: the whole text fits a pipe's buffer, and would otherwise be written at once).
    with subprocess.Popen(
        [sys.executable, "-m", "deploy", "config", "--full"],
        cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        assert process.wait(timeout=60) == 0
        assert process.stderr.read() == ""


def test_the_full_view_is_what_runs_with_the_sources(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("APP_LOG_LEVEL=warning\n")
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "config", "hypercorn", "--full"],
        cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT), "APP_PORT": "9002"},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert document["sources"]["port"] == "environment"
    assert document["sources"]["log_level"] == ".env"
    assert document["server"]["bind"] == ["127.0.0.1:9002"]
    assert document["project"]["worker_timeout"] == document["settings"]["worker_timeout"]
