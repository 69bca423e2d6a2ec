"""What a process holds to write later is written however the process ends (service/exit_flush.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devkit.process import REPO_ROOT

# Two flushes, the first of which fails: the second still runs, once whatever the exit.
HOLD_THEN_LEAVE = """
import multiprocessing, os, sys
from service import exit_flush

def failing():
    raise RuntimeError("a flush that fails")

def holding():
    os.write(1, b"flushed in %d\\n" % os.getpid())

exit_flush.run_at_exit(failing)
exit_flush.run_at_exit(holding)

def worker():
    exit_flush.arm_for_this_process()  # the worker holds something
    exit_flush.arm_for_this_process()  # and more: armed once

if sys.argv[1] == "os._exit":  # a multiprocessing worker (granian's) leaves with os._exit
    child = multiprocessing.get_context("fork").Process(target=worker)
    child.start()
    child.join(20)
    os.write(1, b"child %d\\n" % child.pid)
    os._exit(child.exitcode)  # the parent leaves without flushing: only the child's line is expected
else:  # uvicorn's, hypercorn's and gunicorn's workers leave through sys.exit
    worker()
    os.write(1, b"child %d\\n" % os.getpid())
    sys.exit(0)
"""


@pytest.mark.parametrize("leaving", ["sys.exit", "os._exit"])
def test_every_flush_runs_once_at_the_exit(leaving: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", HOLD_THEN_LEAVE, leaving],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    flushed, (worker,) = _lines(result.stdout)
    assert flushed == [f"flushed in {worker}"]


def _lines(output: str) -> tuple[list[str], list[str]]:
    lines = output.splitlines()
    return [line for line in lines if line.startswith("flushed")], [
        line.removeprefix("child ") for line in lines if line.startswith("child ")
    ]
