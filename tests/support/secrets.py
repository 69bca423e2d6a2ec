"""A Secret volume laid out on disk exactly as the kubelet writes it.

The kubelet's atomic writer puts the keys in a timestamped directory, points the
`..data` symlink at it, and makes every key a symlink through `..data`, so an
update is one rename of `..data`:

    otlp_headers -> ..data/otlp_headers
    ..data -> ..2026_12_01_22_41_12.123456789
    ..2026_12_01_22_41_12.123456789/otlp_headers
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

DATA_LINK = "..data"


def kubelet_secret_volume(directory: Path, files: Mapping[str, bytes], mode: int = 0o440) -> Path:
    """Write `files` (key -> content) into `directory` as a mounted Secret; return `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    timestamped = directory / f"..{now:%Y_%m_%d_%H_%M_%S}.{now.microsecond * 1000:09d}"
    timestamped.mkdir(mode=0o755)
    for key, content in files.items():
        (timestamped / key).write_bytes(content)
        (timestamped / key).chmod(mode)
    os.symlink(timestamped.name, directory / DATA_LINK)
    for key in files:
        os.symlink(f"{DATA_LINK}/{key}", directory / key)
    return directory
