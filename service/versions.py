"""Libraries whose private internals the project touches, held to the versions the hooks were written for.

A module that reaches into a library's internals calls `require()` for it at import,
next to the hook, with the range of versions the hook was written and tested against.
An installed version outside that range stops start-up with one line naming the range,
instead of a hook that misbehaves in production after an upgrade. pyproject.toml states
the same ranges, and tests/unit/test_versions.py checks them against it and uv.lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import Version


class UnsupportedVersionError(Exception):
    """An installed library outside the range a hook of this project was written for."""


@dataclass(frozen=True)
class SupportedRange:
    distribution: str
    specifier: str
    hooks: str  # what relies on the internals, for the error message and the docs

    def installed(self) -> str:
        try:
            return version(self.distribution)
        except PackageNotFoundError:
            raise UnsupportedVersionError(
                f"{self.distribution} is not installed ({self.hooks} needs {self.distribution}"
                f"{self.specifier})"
            ) from None

    def check(self) -> None:
        installed = self.installed()
        if Version(installed) not in SpecifierSet(self.specifier):
            raise UnsupportedVersionError(
                f"{self.distribution} {installed} is installed, but {self.hooks} is written and tested for "
                f"{self.distribution}{self.specifier}: install a version in that range (uv.lock pins one)"
            )


# Every range required so far, by distribution: read by the tests and the docs.
REQUIRED: dict[str, SupportedRange] = {}


def require(distribution: str, specifier: str, hooks: str) -> SupportedRange:
    """Declare that `hooks` rely on `distribution`'s internals in `specifier`; refuse any other version."""
    tested = SupportedRange(distribution, specifier, hooks)
    known = REQUIRED.get(distribution)
    if known is not None and known.specifier != specifier:
        raise UnsupportedVersionError(
            f"{distribution}: {hooks} declares {specifier} but {known.hooks} declares {known.specifier}"
        )
    REQUIRED.setdefault(distribution, tested)
    tested.check()
    return tested
