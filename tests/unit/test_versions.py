"""Ranges of the libraries whose internals hooks touch: declared once, stated in pyproject, locked inside."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from deploy.profiles import PROFILES
from service.versions import REQUIRED, SupportedRange, UnsupportedVersionError

ROOT = Path(__file__).resolve().parents[2]


def _required() -> dict[str, SupportedRange]:
    for module in (
        *PROFILES.values(),
        "service.metrics",
        "service.prometheus_internals",
        "service.lean_routes",
    ):
        importlib.import_module(module)
    return REQUIRED


def _project_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {requirement.name: requirement for requirement in requirements}


def _locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"] if "version" in package}


def test_every_hooked_library_is_declared() -> None:
    assert set(_required()) >= {"uvicorn", "hypercorn", "gunicorn", "uvicorn-worker", "prometheus-client"}


@pytest.mark.parametrize("distribution", sorted(_required()))
def test_pyproject_states_the_tested_range(distribution: str) -> None:
    requirement = _project_requirements()[distribution]
    assert requirement.specifier == SpecifierSet(REQUIRED[distribution].specifier)


@pytest.mark.parametrize("distribution", sorted(_required()))
def test_lock_file_stays_inside_the_tested_range(distribution: str) -> None:
    locked = _locked_versions()[distribution]
    assert Version(locked) in SpecifierSet(REQUIRED[distribution].specifier)


def test_a_version_outside_the_range_is_refused_in_one_line() -> None:
    tested = SupportedRange("gunicorn", ">=999", "deploy/example.py (a hook)")
    with pytest.raises(UnsupportedVersionError) as refused:
        tested.check()
    message = str(refused.value)
    assert "\n" not in message
    assert "gunicorn>=999" in message
    assert "deploy/example.py (a hook)" in message


def test_a_missing_library_is_refused_in_one_line() -> None:
    with pytest.raises(UnsupportedVersionError, match=r"no-such-dist is not installed"):
        SupportedRange("no-such-dist", ">=1", "a hook").check()


def test_two_declarations_of_one_library_must_agree() -> None:
    from service.versions import require

    _required()
    with pytest.raises(UnsupportedVersionError, match="declares"):
        require("gunicorn", ">=1", "another hook")
