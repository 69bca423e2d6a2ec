"""`make help`, as a newcomer reads it: aligned, and plain text when it is not a terminal."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
