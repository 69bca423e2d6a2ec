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
    targets = {line.split()[0] for line in lines}
    assert {f"run-{name}" for name in PROFILES} <= targets
    columns = {len(line) - len(line.split(maxsplit=1)[1]) for line in lines}
    assert len(columns) == 1, result.stdout  # every description starts in the same column
