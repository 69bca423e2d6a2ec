"""Secret files: the one secret setting (APP_OTLP_HEADERS), unknown files refused by name,
the kubelet's own layout accepted, and the value masked wherever settings are shown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from deploy.__main__ import main as launcher_main
from deploy.profiles import PROFILES, load_profile
from service.app import create_app
from service.settings import SettingsError, get_settings, load_settings
from service.settings_types import otlp_header_map
from tests.support.secrets import DATA_LINK, kubelet_secret_volume

TOKEN = "tok-7d41b2e9c0"  # noqa: S105 - a made-up token, to look for
HEADERS = f"authorization=Bearer {TOKEN},x-scope-orgid=tenant-1"
ENDPOINT = "http://127.0.0.1:4318/v1/traces"


pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    return kubelet_secret_volume(tmp_path / "secrets", {"otlp_headers": f"{HEADERS}\n".encode()})


def test_a_secret_file_sets_the_field(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (secrets / "otlp_headers").is_symlink()
    monkeypatch.setenv("APP_OTLP_ENDPOINT", ENDPOINT)
    settings = load_settings(secrets_dir=secrets)
    assert settings.otlp_headers is not None
    assert settings.otlp_headers.get_secret_value() == HEADERS  # the trailing newline is stripped
    assert otlp_header_map(settings.otlp_headers) == {
        "authorization": f"Bearer {TOKEN}",
        "x-scope-orgid": "tenant-1",
    }


def test_the_directory_is_a_setting_read_from_the_environment_or_dotenv(
    secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_OTLP_ENDPOINT", ENDPOINT)
    Path(".env").write_text(f"APP_SECRETS_DIR={secrets}\n")
    settings = load_settings()
    assert settings.secrets_dir == secrets
    assert settings.otlp_headers is not None
    monkeypatch.setenv("APP_SECRETS_DIR", str(secrets.parent / "missing"))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"invalid APP_SECRETS_DIR={str(secrets.parent / 'missing')!r}: no such directory "
        "(allowed: an absolute path to a directory)"
    )
    monkeypatch.setenv("APP_SECRETS_DIR", "secrets")
    with pytest.raises(SettingsError, match=r"^invalid APP_SECRETS_DIR='secrets': must be an absolute path"):
        load_settings()


def test_the_environment_wins_over_a_secret_file(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_OTLP_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("APP_OTLP_HEADERS", "authorization=Bearer from-env")
    settings = load_settings(secrets_dir=secrets)
    assert settings.otlp_headers == SecretStr("authorization=Bearer from-env")


def test_kubelet_bookkeeping_is_not_a_setting(tmp_path: Path) -> None:
    # An empty Secret, mid-update: the kubelet's links, its timestamped directory and
    # the temporary link it renames over `..data`.
    volume = kubelet_secret_volume(tmp_path / "secrets", {})
    os.symlink(next(p.name for p in volume.iterdir() if p.name != DATA_LINK), volume / "..data_tmp")
    assert load_settings(secrets_dir=volume).otlp_headers is None


@pytest.mark.parametrize(
    ("file_name", "nearest"),
    [
        ("api_token", "broker_password"),  # the old README's example: nearest secret setting
        ("app_otlp_headers", "otlp_headers"),  # the variable's name, not the field's
        ("OTLP_HEADER", "otlp_headers"),
        ("prot", "port"),
    ],
)
def test_an_unknown_secret_file_is_refused_by_its_name(tmp_path: Path, file_name: str, nearest: str) -> None:
    volume = kubelet_secret_volume(tmp_path / "secrets", {file_name: b"some-secret-value"})
    with pytest.raises(SettingsError) as caught:
        load_settings(secrets_dir=volume)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"{file_name} (secret file {volume / file_name}) is not a setting of this service; "
        f"did you mean {nearest}?"
    )
    assert "some-secret-value" not in message


def test_an_unreadable_secret_file_is_refused_without_quoting_it(tmp_path: Path) -> None:
    content = b"authorization=\xff" + TOKEN.encode()
    volume = kubelet_secret_volume(tmp_path / "secrets", {"otlp_headers": content})
    with pytest.raises(SettingsError) as caught:
        load_settings(secrets_dir=volume)
    assert str(caught.value) == f"otlp_headers (secret file {volume / 'otlp_headers'}) is not UTF-8 text"


def test_a_secret_file_cannot_move_the_secrets_directory(tmp_path: Path) -> None:
    volume = kubelet_secret_volume(tmp_path / "secrets", {"secrets_dir": b"/elsewhere"})
    with pytest.raises(SettingsError, match=r"^secrets_dir \(secret file .*\) cannot set APP_SECRETS_DIR"):
        load_settings(secrets_dir=volume)


@pytest.mark.parametrize(
    "value",
    [
        "Bearer tok-7d41b2e9c0",  # no key
        "authorization=",  # no value
        "bad header=tok-7d41b2e9c0",  # not a header name
        "authorization=tok-7d41b2e9c0%0d%0ax-injected=1",  # CR LF, percent-encoded
        "authorization=a,Authorization=tok-7d41b2e9c0",  # twice
        " , ",
    ],
)
def test_malformed_headers_are_refused_without_quoting_them(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("APP_OTLP_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("APP_OTLP_HEADERS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid APP_OTLP_HEADERS: ")
    assert "allowed: comma-separated `key=value` pairs" in message
    assert "tok-7d41b2e9c0" not in message
    assert "\n" not in message


def test_headers_without_an_endpoint_are_refused(secrets: Path) -> None:
    with pytest.raises(SettingsError, match="APP_OTLP_HEADERS needs APP_OTLP_ENDPOINT"):
        load_settings(secrets_dir=secrets)


def test_percent_encoding_carries_commas_and_names_are_case_insensitive() -> None:
    assert otlp_header_map(SecretStr("Authorization=Basic%20YTpi%2C,X-Team = a%3Db ,")) == {
        "authorization": "Basic YTpi,",
        "x-team": "a=b",
    }


def test_the_value_is_masked_wherever_settings_show(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_OTLP_ENDPOINT", ENDPOINT)
    settings = load_settings(secrets_dir=secrets)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert settings.public_dump()["otlp_headers"] == "**********"
    for profile in sorted(PROFILES):
        assert TOKEN not in json.dumps(
            load_profile(profile).launch_config(settings).document(), default=str
        ), profile
    with TestClient(create_app(settings.model_copy(update={"docs_enabled": True}))) as client:
        assert TOKEN not in client.get("/openapi.json").text


def test_deploy_config_masks_the_secret(
    secrets: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("APP_OTLP_ENDPOINT", ENDPOINT)
    get_settings.cache_clear()
    try:
        assert launcher_main(["config", "--full"]) == 0
        assert launcher_main(["config"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    full, _, concise = out.out.partition("\n}\n")
    assert json.loads(full + "}")["settings"]["otlp_headers"] == "**********"
    assert json.loads(full + "}")["sources"]["otlp_headers"] == "secret file"
    [row] = [line for line in concise.splitlines() if line.startswith("APP_OTLP_HEADERS ")]
    assert row.split()[1:5] == ["(set,", "secret)", "secret", "file"]
    assert TOKEN not in out.out + out.err
