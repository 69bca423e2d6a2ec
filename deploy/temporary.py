"""The launcher's temporary directories, and one clear line when the system offers none.

A read-only root filesystem (as k8s/base runs the image) leaves only what is mounted writable:
without a writable /tmp the launcher has nowhere for its metrics files, its drain flag or its
server's scratch files. That is refused at start-up in one line, as a wrong setting is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from service.settings import SettingsError

REMEDY = "mount a writable /tmp (k8s/base mounts an emptyDir there) or point TMPDIR at a writable directory"


def make(prefix: str, needed_for: str, directory: Path | None = None) -> Path:
    """A fresh directory (under `directory`, else the system's temporary directory), for `needed_for`."""
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    except OSError as error:
        raise SettingsError(
            f"no writable temporary directory for {needed_for}: {error.strerror or error}; {REMEDY}"
        ) from None
