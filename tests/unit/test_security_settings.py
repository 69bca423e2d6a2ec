"""Host allow-list, CORS and production's refusal of development-only settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import Field, SecretStr

from service.app import create_app
from service.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("isolated_env")


def test_host_allow_list_rejects_others_with_json_400_but_not_probes() -> None:
    client = TestClient(create_app(Settings(allowed_hosts="api.example.com,*.internal.example")))  # type: ignore[arg-type]
    assert client.get("/", headers={"host": "api.example.com"}).status_code == 200
    assert client.get("/", headers={"host": "svc.internal.example:8000"}).status_code == 200
    rejected = client.get("/", headers={"host": "evil.example.net"})
    assert rejected.status_code == 400
    assert rejected.json() == {"detail": "Invalid host header"}
    assert rejected.headers["x-content-type-options"] == "nosniff"
    assert client.get("/healthz", headers={"host": "10.1.2.3:8000"}).status_code == 200


def test_cors_off_by_default_and_on_for_listed_origins() -> None:
    preflight = {"origin": "https://app.example.com", "access-control-request-method": "POST"}
    off = TestClient(create_app(Settings()))
    assert "access-control-allow-origin" not in off.options("/echo", headers=preflight).headers
    on = TestClient(create_app(Settings(cors_allow_origins="https://app.example.com")))  # type: ignore[arg-type]
    answer = on.options("/echo", headers=preflight)
    assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
    other = on.options("/echo", headers={**preflight, "origin": "https://evil.example.net"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"APP_DOCS_ENABLED": "true", "APP_HOST": "0.0.0.0"}, "APP_DOCS_ENABLED=true"),
        ({"APP_LOG_LEVEL": "debug"}, "APP_LOG_LEVEL=debug"),
        ({"APP_FORWARDED_ALLOW_IPS": "*"}, "APP_FORWARDED_ALLOW_IPS=*"),
        ({"APP_CORS_ALLOW_ORIGINS": "*"}, "APP_CORS_ALLOW_ORIGINS=*"),
    ],
)
def test_production_refuses_development_only_settings(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert named in str(caught.value)
    assert "APP_ALLOW_UNSAFE_PRODUCTION" in str(caught.value)
    monkeypatch.setenv("APP_ALLOW_UNSAFE_PRODUCTION", "true")
    assert load_settings().env == "production"


def test_development_allows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_DOCS_ENABLED", "true")
    monkeypatch.setenv("APP_HOST", "0.0.0.0")
    monkeypatch.setenv("APP_FORWARDED_ALLOW_IPS", "*")
    assert load_settings().effective_docs_enabled


class WithSecret(Settings):
    api_token: SecretStr | None = Field(default=None, description="A secret.")


def test_secret_never_in_openapi_or_config_output(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api_token").write_text("top-secret-value-123")
    settings = load_settings(secrets_dir=secrets, settings_class=WithSecret)
    with TestClient(create_app(settings)) as client:
        assert "top-secret-value-123" not in client.get("/openapi.json").text
    assert "top-secret-value-123" not in str(settings.public_dump())
