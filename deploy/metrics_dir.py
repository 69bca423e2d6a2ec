"""The per-launch directory of Prometheus multiprocess files.

It must exist, empty, and be exported *before* anything imports
prometheus_client: the library picks its storage mode at import time. So this
module never imports it, and the launcher calls it before starting a server.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(configured: Path | None) -> Path:
    """Create, or empty, the directory; a fresh temporary one when none is configured."""
    if configured is None:
        return Path(tempfile.mkdtemp(prefix="asgi-deploy-metrics-"))
    configured.mkdir(parents=True, exist_ok=True)
    for entry in configured.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return configured
