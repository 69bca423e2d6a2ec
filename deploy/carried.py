"""Carried patches: fixes that need a server's internals, each guaranteed only where it was tested.

A capability a server's public API cannot give is carried as a patch in one module per
server, `deploy/<server>_internals.py`, which declares every patch it holds as a
`CarriedPatch`: the releases it was tested on, what it gives, what the server does without
it, and the upstream change that would let us delete it. The patch's code asks `applies()`
before it touches anything private:

- inside the tested range it applies;
- outside it, or when the library is missing, it does not: the server runs with its own
  public behaviour, and the launcher logs one warning line naming the capability that is
  not guaranteed with the installed version (`warn_outside_tested`). The service starts.

A setting that cannot work at all without a patch names it in `settings`: outside the range,
setting it explicitly is refused in one line (deploy/profile.py), as any unsupported setting.

Each profile lists its patches (`Profile.carried`); docs/upstream.md is generated from them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

logger = logging.getLogger("deploy")


@functools.cache
def installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class CarriedPatch:
    distribution: str  # the package whose internals the patch touches, as pip names it
    tested: str  # the releases it was tested on, a version specifier (">=0.54,<0.56")
    capability: str  # what it gives, for the warning and docs/upstream.md
    fallback: str  # what the server does instead outside the range
    upstream: str  # the upstream issue, and the change that would let us delete the patch
    module: str  # where it lives: deploy/<server>_internals.py
    settings: tuple[str, ...] = ()  # settings that cannot work without it: refused outside the range

    def installed(self) -> str | None:
        return installed_version(self.distribution)

    def in_range(self) -> bool:
        installed = self.installed()
        if installed is None:
            return False
        try:
            return Version(installed) in SpecifierSet(self.tested, prereleases=True)
        except InvalidVersion:
            return False

    def applies(self) -> bool:
        """Whether the patch may touch the installed release's internals (no log: see the launcher)."""
        return self.in_range()

    def warning(self) -> str:
        installed = self.installed()
        found = f"{self.distribution} {installed}" if installed else f"{self.distribution} (not installed)"
        return (
            f"{found} is outside the releases {self.module} was tested on ({self.distribution}"
            f"{self.tested}): {self.capability} is not guaranteed; {self.fallback}"
        )


def warn_outside_tested(patches: tuple[CarriedPatch, ...]) -> list[str]:
    """One warning line for each patch the installed releases leave out; returns the lines."""
    lines = [patch.warning() for patch in patches if not patch.in_range()]
    for line in lines:
        logger.warning("%s", line)
    return lines
