"""The launcher refuses an unknown secret file before any server starts: a real launch."""

from __future__ import annotations

from pathlib import Path

from devkit.process import refused_at_startup
from tests.support.secrets import kubelet_secret_volume
from tests.unit.test_secret_settings import ENDPOINT, HEADERS, TOKEN


def test_the_launcher_refuses_an_unknown_secret_file_before_any_server_starts(tmp_path: Path) -> None:
    files = {"otlp_headers": HEADERS.encode(), "api_token": b"x"}
    volume = kubelet_secret_volume(tmp_path / "secrets", files)
    line = refused_at_startup("uvicorn", {"APP_SECRETS_DIR": str(volume), "APP_OTLP_ENDPOINT": ENDPOINT})
    assert line.startswith(
        f"asgi-deploy: api_token (secret file {volume / 'api_token'}) is not a setting of this service; "
        "did you mean broker_password?"
    )
    assert TOKEN not in line
