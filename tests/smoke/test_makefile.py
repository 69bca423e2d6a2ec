"""`make help`, as a newcomer reads it: aligned, and plain text when it is not a terminal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[2]


def test_help_is_aligned_plain_text_when_piped() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    lines = result.stdout.splitlines()
    assert "\x1b" not in result.stdout
    run = next(line for line in lines if line.split()[0] == "run-<profile>")
    assert run.endswith(": " + " ".join(PROFILES))  # read from deploy/profiles.py, the one list
    columns = {len(line) - len(line.split(maxsplit=1)[1]) for line in lines}
    assert len(columns) == 1, result.stdout  # every description starts in the same column


def test_every_profile_has_its_run_target() -> None:
    for name in PROFILES:
        result = subprocess.run(
            ["make", "--no-print-directory", "-n", f"run-{name}"],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        assert result.stdout.splitlines()[-1].endswith(f"-m deploy {name}")


def _run_line(target: str, cwd: Path, env: dict[str, str] | None = None, *args: str) -> str:
    """The command `make <target>` would run, as make prints it with -n."""
    environ = {key: value for key, value in os.environ.items() if key != "APP_WORKERS"}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-f", str(ROOT / "Makefile"), target, *args],
        cwd=cwd, env=environ | (env or {}), capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return result.stdout.splitlines()[-1]


@pytest.mark.parametrize("target", ["run", "run-granian", "dev"])
def test_a_run_on_this_machine_serves_one_worker_unless_told(target: str, tmp_path: Path) -> None:
    # One worker by default, so that the rooms' in-process broker serves `make run-uvicorn`...
    assert "APP_WORKERS=1 " in _run_line(target, tmp_path)
    # ...but APP_WORKERS from the environment, make's command line or .env is never overridden.
    assert "APP_WORKERS" not in _run_line(target, tmp_path, {"APP_WORKERS": "3"})
    assert "APP_WORKERS" not in _run_line(target, tmp_path, None, "APP_WORKERS=3")
    (tmp_path / ".env").write_text("APP_LOG_LEVEL=debug\n export APP_WORKERS = 4\n")
    assert "APP_WORKERS" not in _run_line(target, tmp_path)
