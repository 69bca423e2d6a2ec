"""Make an installed library report another release, for the tests of carried patches.

`importlib.metadata` answers with the first distribution of a name on `sys.path`. A folder
holding only `<name>-<version>.dist-info/METADATA`, put first on `PYTHONPATH`, makes a real
process believe that release is installed, while it imports the library's real code: how a
fork's venv looks right after `uv lock --upgrade` took a release this template never tested.
"""

from __future__ import annotations

from pathlib import Path


def reported_releases(folder: Path, releases: dict[str, str]) -> Path:
    """Write a dist-info for each `distribution: version` into `folder`; put it first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for distribution, release in releases.items():
        info = folder / f"{distribution.replace('-', '_')}-{release}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {release}\n")
    return folder
