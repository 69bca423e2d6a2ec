from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from deploy.__main__ import main as launcher_main
from service.settings import Settings, SettingsError, get_settings, load_settings

pytestmark = pytest.mark.usefixtures("isolated_env")


def test_defaults() -> None:
    settings = load_settings()
    assert settings.env == "development"
    assert settings.server == "uvicorn"
    assert settings.asgi_app == "service.main:app"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.workers >= 1
    assert settings.forwarded_allow_ips == ("127.0.0.1", "::1")
    assert settings.effective_docs_enabled is True


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PORT", "9001")
    monkeypatch.setenv("APP_WORKERS", "3")
    monkeypatch.setenv("APP_ACCESS_LOG", "false")
    monkeypatch.setenv("APP_FORWARDED_ALLOW_IPS", "10.0.0.0/8, 192.168.1.1")
    monkeypatch.setenv("app_log_level", "debug")  # case-insensitive names
    settings = load_settings()
    assert (settings.port, settings.workers, settings.access_log) == (9001, 3, False)
    assert settings.forwarded_allow_ips == ("10.0.0.0/8", "192.168.1.1")
    assert settings.log_level == "debug"


def test_production_turns_docs_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    assert load_settings().effective_docs_enabled is False
    monkeypatch.setenv("APP_DOCS_ENABLED", "true")
    assert load_settings().effective_docs_enabled is True


def test_dotenv_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("APP_PORT=7000\nAPP_LOG_LEVEL=warning\n")
    monkeypatch.setenv("APP_LOG_LEVEL", "error")
    settings = load_settings(env_file=env_file)
    assert settings.port == 7000
    assert settings.log_level == "error"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("APP_PROT=9001", "APP_PROT (.env line 3) is not a setting of this service; did you mean APP_PORT?"),
        ("PROT=9001", "PROT (.env line 3) is not a setting of this service; did you mean APP_PORT?"),
        ("port=9001", "port (.env line 3) is not a setting of this service; did you mean APP_PORT?"),
        (
            "export App_Worker=2",
            "App_Worker (.env line 3) is not a setting of this service; did you mean APP_WORKERS?",
        ),
        ("APP_PORT 9001 oops", ".env line 3 is not a `NAME=value` line"),
    ],
)
def test_dotenv_mistakes_are_named_as_written_with_their_line(line: str, expected: str) -> None:
    Path(".env").write_text(f"# local overrides\nAPP_LOG_LEVEL=debug\n{line}\nAPP_WORKERS=2\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(expected)
    assert "APP_APP_" not in message


def test_dotenv_that_is_not_text_is_refused() -> None:
    Path(".env").write_bytes(b"APP_PORT=\xff\n")
    with pytest.raises(SettingsError, match=r"^cannot read \.env: not UTF-8 text$"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("APP_PORT", "notaport", "an integer from 1 to 65535"),
        ("APP_PORT", "70000", "an integer from 1 to 65535"),
        ("APP_WORKERS", "0", "an integer from 1 to 256"),
        ("APP_ENV", "staging", "one of development, production"),
        ("APP_SERVER", "tornado", "one of uvicorn, hypercorn, gunicorn"),
        ("APP_LOG_LEVEL", "loud", "one of critical, error, warning, info, debug"),
        ("APP_ACCESS_LOG", "maybe", "true or false"),
        ("APP_HOST", "not a host!", "an IPv4/IPv6 address or a host name"),
        ("APP_ASGI_APP", "service.main", "an import string"),
        ("APP_FORWARDED_ALLOW_IPS", "10.0.0.0/33", "CIDR"),
        ("APP_FORWARDED_ALLOW_IPS", "10.0.0.1/8", "host bits set (the network is 10.0.0.0/8)"),
        ("APP_METRICS_ALLOW_IPS", "fd00::1/64", "host bits set (the network is fd00::/64)"),
        ("APP_ASGI_APP", "pkg.1x:app", "an import string"),
        ("APP_ASGI_APP", "a..b:app", "an import string"),
        ("APP_ASGI_APP", "service.main:app.", "an import string"),
        ("APP_ROOT_PATH", "api/", "a path like `/api`"),
        ("APP_KEEPALIVE_TIMEOUT", "0", "an integer from 1 to 3600"),
    ],
)
def test_invalid_value_names_variable_value_and_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.count("\n") == 0
    assert variable in message
    assert repr(value) in message
    assert allowed in message


def test_jitter_without_max_requests_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_MAX_REQUESTS_JITTER", "10")
    with pytest.raises(SettingsError, match="APP_MAX_REQUESTS_JITTER needs APP_MAX_REQUESTS"):
        load_settings()


def test_unknown_app_variable_is_refused_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_WORKER", "2")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(
        "APP_WORKER (environment variable) is not a setting of this service; did you mean APP_WORKERS?"
    )


def test_kubernetes_service_link_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a Service named "app" injects when enableServiceLinks is left on.
    monkeypatch.setenv("APP_PORT", "tcp://10.0.0.1:80")
    with pytest.raises(SettingsError, match="APP_PORT"):
        load_settings()


class WithSecret(Settings):
    api_token: SecretStr | None = Field(default=None, description="A secret.")


def test_secret_files_are_read_and_masked(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api_token").write_text("s3cr3t-value")
    settings = load_settings(secrets_dir=secrets, settings_class=WithSecret)
    assert isinstance(settings, WithSecret)
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings.public_dump())


def test_invalid_secret_value_is_not_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    class StrictSecret(Settings):
        api_token: SecretStr = Field(min_length=20, description="A secret.")

    monkeypatch.setenv("APP_API_TOKEN", "short-leaky")
    with pytest.raises(SettingsError) as caught:
        load_settings(settings_class=StrictSecret)
    assert "APP_API_TOKEN" in str(caught.value)
    assert "short-leaky" not in str(caught.value)


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_launcher_reports_bad_setting_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP_WORKERS", "many")
    get_settings.cache_clear()
    try:
        assert launcher_main(["config"]) == 2
    finally:
        get_settings.cache_clear()
    assert capsys.readouterr().err.strip() == (
        "asgi-deploy: invalid APP_WORKERS='many': Input should be a valid integer, unable to parse "
        "string as an integer (allowed: an integer from 1 to 256)"
    )


def test_drain_window_defaults_to_off_in_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert load_settings().effective_drain_seconds == 5
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert load_settings().effective_drain_seconds == 0
    monkeypatch.setenv("APP_DRAIN_SECONDS", "3")
    assert load_settings().effective_drain_seconds == 3


def test_a_name_of_your_own_is_told_how_to_become_a_setting() -> None:
    # The first name a fork adds: not near enough to APP_BROKER_URL to be taken for it.
    Path(".env").write_text("DATABASE_URL=postgresql://db/app\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message == (
        "DATABASE_URL (.env line 1) is not a setting of this service (docs/settings.md lists them); a "
        "setting of your own is a field `database_url` of Settings in service/settings.py, set as "
        "APP_DATABASE_URL"
    )


def test_a_misspelt_name_gets_the_suggestion_without_every_known_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_WORKRES", "2")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "APP_WORKRES (environment variable) is not a setting of this service; did you mean APP_WORKERS?"
    )


def test_a_wrong_choice_states_the_allowed_values_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP_LOG_LEVEL", "loud")
    get_settings.cache_clear()
    try:
        assert launcher_main(["config"]) == 2
    finally:
        get_settings.cache_clear()
    assert capsys.readouterr().err.strip() == (
        "asgi-deploy: invalid APP_LOG_LEVEL='loud': not one of the allowed values "
        "(allowed: one of critical, error, warning, info, debug)"
    )
