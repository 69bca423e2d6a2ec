"""Carried patches: applied in range; outside it the service starts, warns once, refuses what needs them."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from deploy import carried, upstream_table
from deploy.carried import CarriedPatch, warn_outside_tested
from deploy.profile import Profile, UnsupportedSettingError
from deploy.profiles import PROFILES, load_profile
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "upstream.md"

PATCH = CarriedPatch(
    distribution="exampleserver",
    tested=">=1.4,<1.6",
    capability="a deadline for the request head",
    fallback="the server's own keep-alive timer only",
    upstream="none filed",
    module="deploy/<example>_internals.py",
    settings=("request_head_timeout",),
)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    releases: dict[str, str | None] = {}
    monkeypatch.setattr(carried, "installed_version", releases.get)
    return releases


@pytest.mark.parametrize(
    ("release", "applies"), [("1.4.0", True), ("1.5.9", True), ("1.6.0", False), ("1.3", False)]
)
def test_a_patch_applies_on_the_releases_it_was_tested_on(
    installed: dict[str, str | None], release: str, applies: bool
) -> None:
    installed["exampleserver"] = release
    assert PATCH.applies() is applies


def test_a_missing_library_is_outside_every_range(installed: dict[str, str | None]) -> None:
    assert not PATCH.applies()
    assert "exampleserver (not installed)" in PATCH.warning()


def test_outside_the_range_one_warning_line_names_the_capability(
    installed: dict[str, str | None], caplog: pytest.LogCaptureFixture
) -> None:
    installed["exampleserver"] = "1.7.2"
    inside = CarriedPatch(
        "otherserver", ">=2", "something else", "its own", "none filed", "deploy/<other>_internals.py"
    )
    installed["otherserver"] = "2.1"
    with caplog.at_level(logging.WARNING, logger="deploy"):
        lines = warn_outside_tested((PATCH, inside))
    assert [record.getMessage() for record in caplog.records] == lines
    assert len(lines) == 1
    line = lines[0]
    assert "\n" not in line
    for part in ("exampleserver 1.7.2", ">=1.4,<1.6", PATCH.capability, PATCH.fallback, PATCH.module):
        assert part in line


def _profile() -> Profile:
    return Profile(
        name="example",
        summary="",
        settings={},
        build=lambda settings: {},
        serve=lambda settings: 0,
        carried=(PATCH,),
    )


def test_outside_the_range_a_setting_that_needs_the_patch_is_refused_in_one_line(
    installed: dict[str, str | None],
) -> None:
    installed["exampleserver"] = "1.7.2"
    with pytest.raises(UnsupportedSettingError) as refused:
        _profile().check(Settings(request_head_timeout=3))
    message = str(refused.value)
    assert "\n" not in message
    assert "APP_REQUEST_HEAD_TIMEOUT" in message
    assert "exampleserver 1.7.2" in message
    assert "deploy/<example>_internals.py" in message


def test_outside_the_range_the_default_is_not_refused(installed: dict[str, str | None]) -> None:
    installed["exampleserver"] = "1.7.2"
    _profile().check(Settings())
    default = Settings.model_fields["request_head_timeout"].default
    _profile().check(Settings(request_head_timeout=default))


def test_inside_the_range_nothing_is_refused(installed: dict[str, str | None]) -> None:
    installed["exampleserver"] = "1.5.0"
    _profile().check(Settings(request_head_timeout=3))


def test_docs_upstream_is_current() -> None:
    assert DOCS.read_text() == upstream_table.render(), "docs/upstream.md is stale: run `make docs`"


def test_every_internals_module_is_carried_and_listed() -> None:
    modules = {f"deploy/{path.name}" for path in (ROOT / "deploy").glob("*_internals.py")}
    listed = set(upstream_table.carried_patches())
    assert modules == listed
    for module in modules:
        assert f"## `{module}`" in DOCS.read_text()


@pytest.mark.parametrize("name", list(PROFILES))
def test_each_patch_lives_in_an_internals_module_and_is_tested_on_the_locked_release(name: str) -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {package["name"]: package["version"] for package in lock["package"] if "version" in package}
    for patch in load_profile(name).carried:
        assert (ROOT / patch.module).is_file()
        assert patch.module.startswith("deploy/")
        assert patch.module.endswith("_internals.py")
        assert Version(locked[patch.distribution]) in SpecifierSet(patch.tested), patch
        assert all(setting in Settings.model_fields for setting in patch.settings), patch


def test_no_dependency_is_capped_below_its_next_major() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    lines = [*project["dependencies"], *(line for extra in extras for line in extra)]
    for requirement in map(Requirement, lines):
        lower = [Version(spec.version) for spec in requirement.specifier if spec.operator in {">=", "=="}]
        for spec in requirement.specifier:
            if spec.operator in {"<", "<="}:
                floor = lower[0] if lower else Version("0")
                assert Version(spec.version) >= Version(str(floor.major + 1)), requirement
            assert spec.operator not in {"==", "~="}, requirement
