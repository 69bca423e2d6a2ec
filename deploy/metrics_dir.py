"""The per-launch directory of Prometheus multiprocess files.

It must exist, empty, and be exported *before* anything imports
prometheus_client: the library picks its storage mode at import time. So this
module imports it only in `forget_worker`, which main processes call once a worker
has exited; they never import the service's metrics (service/multiprocess_metrics.py), whose
module-level gauges would write series of the main process's own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deploy import temporary
from service.settings import SettingsError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(configured: Path | None) -> Path:
    """Create, or empty, the directory; a fresh temporary one when none is configured."""
    if configured is None:
        return temporary.make("asgi-deploy-metrics-", "the metrics files (APP_METRICS_DIR is unset)")
    try:
        configured.mkdir(parents=True, exist_ok=True)
        for entry in configured.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as error:
        raise SettingsError(
            f"APP_METRICS_DIR={configured}: cannot make or empty it ({error.strerror or error})"
        ) from None
    return configured


def forget_worker(pid: int, directory: Path | None) -> None:
    """Drop a dead worker's live gauges (its counters stay: totals never go down)."""
    if directory is not None:
        from prometheus_client import multiprocess  # noqa: PLC0415 - see the module docstring

        multiprocess.mark_process_dead(pid, path=str(directory))  # type: ignore[no-untyped-call]
