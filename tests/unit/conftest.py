from pathlib import Path

import pytest


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No APP_* variable of the machine's, and no stray .env: settings come from the test alone."""
    for key in list(__import__("os").environ):
        if key.upper().startswith("APP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
