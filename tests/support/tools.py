"""System tools a test needs (podman, haproxy, wrk...): skipped with the reason where one is
missing, except in CI (`CI=true`), where a missing tool is a failure: CI installs them all
(.ci/run), so a skip there would hide a test that never ran."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Skip with `reason`, or fail with it in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this test must run here)", pytrace=False)
    pytest.skip(reason)


def require_tools(*tools: str, install: str) -> dict[str, str]:
    """Path of every tool, or skip (fail in CI) naming the first missing one and how to get it."""
    found: dict[str, str] = {}
    for tool in tools:
        path = shutil.which(tool)
        if path is None:
            missing(f"{tool} is not installed ({install})")
        else:
            found[tool] = path
    return found
