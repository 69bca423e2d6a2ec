"""No writable directory for what the launcher keeps on disk: refused at start-up in one line
(deploy/temporary.py, deploy/metrics_dir.py), as a read-only root filesystem without /tmp gives it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deploy import metrics_dir, temporary
from service.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
# The launcher's own entry point, in a process whose temporary directory does not exist.
LAUNCH_WITHOUT_TMP = (
    "import sys, tempfile; tempfile.tempdir = sys.argv[1]\n"
    "from deploy.__main__ import main\n"
    "raise SystemExit(main(['uvicorn']))\n"
)


def test_no_temporary_directory_is_one_line_with_the_remedy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(SettingsError) as refused:
        temporary.make("asgi-deploy-test-", "the drain flag (APP_DRAIN_FILE is unset)")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        "no writable temporary directory for the drain flag (APP_DRAIN_FILE is unset): "
    )
    assert "mount a writable /tmp" in message


def test_a_metrics_dir_that_cannot_be_made_names_its_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SettingsError, match=r"^APP_METRICS_DIR=.*a-file/metrics: cannot make or empty it \("):
        metrics_dir.prepare(blocker / "metrics")


def test_the_launcher_refuses_to_start_without_a_temporary_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH_WITHOUT_TMP, str(tmp_path / "missing")],
        cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT), "APP_PORT": "1"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert "no writable temporary directory for the metrics files (APP_METRICS_DIR is unset)" in result.stderr
