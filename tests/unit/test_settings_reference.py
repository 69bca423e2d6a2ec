from pathlib import Path

from deploy.settings_table import BEGIN, END, render, replace_table
from service.settings import Settings, env_name

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_readme_settings_table_is_current() -> None:
    document = REFERENCE.read_text()
    assert replace_table(document) == document, "docs/settings.md is stale: run `make docs`"


def test_table_lists_every_setting() -> None:
    table = render()
    for name in Settings.model_fields:
        assert f"`{env_name(name)}`" in table


def test_markers_present() -> None:
    assert BEGIN in REFERENCE.read_text()
    assert END in REFERENCE.read_text()
