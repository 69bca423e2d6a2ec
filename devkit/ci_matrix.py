"""The CI workflow's per-profile matrices, derived from the one list of servers (deploy/profiles.py).

`python -m devkit.ci_matrix` prints the `include:` entries the smoke and resilience jobs need;
tests/k8s/test_linters.py fails, printing them, when .github/workflows/ci.yml has others.
A test id names its profile in its parameters, and `pytest -k NAME` matches substrings, so a
profile whose name is part of another's (gunicorn, gunicorn-asgi) excludes the longer one.
"""

from __future__ import annotations

from collections.abc import Sequence

from deploy.profiles import PROFILES

NO_PROFILE = "none"  # the matrix entry for the tests that name no profile


def selection(name: str, names: Sequence[str]) -> str:
    longer = [other for other in names if other != name and name in other]
    return " and not ".join([name, *longer])


def matrix(names: Sequence[str] | None = None) -> list[dict[str, str]]:
    names = list(PROFILES) if names is None else names
    entries = [{"profile": name, "select": selection(name, names)} for name in names]
    # A name that contains another is already matched by the shorter one.
    shortest = [name for name in names if not any(other != name and other in name for other in names)]
    entries.append({"profile": NO_PROFILE, "select": f"not ({' or '.join(shortest)})"})
    return entries


def render(names: Sequence[str] | None = None) -> str:
    return "\n".join(
        f'          - {{profile: {entry["profile"]}, select: "{entry["select"]}"}}' for entry in matrix(names)
    )


if __name__ == "__main__":
    print(render())
