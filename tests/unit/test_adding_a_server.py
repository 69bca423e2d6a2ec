"""Adding a server takes its module and one line in deploy/profiles.py: a throwaway sixth profile shows it.

Everything that names the servers reads that list: the settings' allowed values, the launcher's
commands, `python -m deploy config`, docs/servers.md and docs/upstream.md, the CI matrices.
(The Makefile's run-<profile> reads the same file: tests/smoke/test_makefile.py.)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import pytest

from deploy import servers_table, upstream_table
from deploy.__main__ import main as launcher_main
from deploy.profiles import PROFILES, load_profile
from devkit import ci_matrix
from service.settings import Settings, get_settings

SIXTH = "sixth"


@pytest.fixture
def sixth(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("sixth_profile")
    module.PROFILE = dataclasses.replace(load_profile("uvicorn"), name=SIXTH)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sixth_profile", module)
    monkeypatch.setitem(PROFILES, SIXTH, "sixth_profile")
    return SIXTH


def test_a_sixth_profile_is_known_everywhere_from_one_line(
    sixth: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Settings(server=sixth).server == sixth
    assert load_profile(sixth).name == sixth
    assert f"`{sixth}`" in servers_table.render()
    upstream_table.render()  # its carried patches, if any, are listed with it
    assert {"profile": sixth, "select": sixth} in ci_matrix.matrix()
    monkeypatch.setenv("APP_SERVER", sixth)
    get_settings.cache_clear()
    try:
        assert launcher_main(["config", sixth, "--full"]) == 0
    finally:
        get_settings.cache_clear()
    assert json.loads(capsys.readouterr().out)["profile"] == sixth


def test_without_its_line_the_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of the allowed values"):
        Settings(server=SIXTH)
