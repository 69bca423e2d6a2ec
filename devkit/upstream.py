"""`make test-upstream`: the smoke and resilience suites on the newest release of every dependency.

A fork learns of a breaking release here, before it merges one. The committed uv.lock is
never touched: a copy of the project metadata is locked afresh with `uv lock --upgrade` in
`.upstream/`, exported, and installed into a throwaway venv there, with the project itself
installed editable from this tree. pytest then runs in that venv, and the result is printed
as one table: each guarantee (a test) against each profile, passed or failed on those
releases, below the list of what moved since uv.lock.

    python -m devkit.upstream [--uv PATH] [-- PYTEST_ARGS...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from deploy.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".upstream"
SUITES = ("tests/smoke", "tests/resilience")
ALL_PROFILES = "any"  # the column of tests that name no profile
MARKS = {"passed": "ok", "failed": "FAIL", "error": "FAIL", "skipped": "skip", "xfailed": "xfail"}


@dataclass(frozen=True)
class Outcome:
    guarantee: str  # the test, without its parameters: module::function
    profile: str
    result: str  # one of MARKS' keys


def profile_of(test_id: str) -> str:
    """The profile a test id names in its parameters, `any` if none (longest name first)."""
    if "[" not in test_id:
        return ALL_PROFILES
    params = test_id[test_id.index("[") + 1 : -1].split("-")
    joined = "-".join(params)
    for name in sorted(PROFILES, key=len, reverse=True):
        if name in params or f"-{name}-" in f"-{joined}-":
            return name
    return ALL_PROFILES


def outcomes(junit_xml: str) -> list[Outcome]:
    """Each test case of a pytest JUnit report, with its profile and result."""
    found = []
    for case in ET.fromstring(junit_xml).iter("testcase"):  # noqa: S314 - pytest's own report
        name = case.get("name", "")
        module = case.get("classname", "").rsplit(".", 1)[-1]
        result = "passed"
        for child in case:
            if child.tag in {"failure", "error"}:
                result = "failed"
            elif child.tag == "skipped":
                result = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        found.append(Outcome(f"{module}::{name.split('[')[0]}", profile_of(name), result))
    return found


def table(found: Sequence[Outcome]) -> str:
    """Guarantees against profiles; a cell shows every result of its tests, failures first."""
    columns = [*PROFILES, ALL_PROFILES]
    cells: dict[tuple[str, str], set[str]] = {}
    for outcome in found:
        cells.setdefault((outcome.guarantee, outcome.profile), set()).add(outcome.result)
    rows = sorted({outcome.guarantee for outcome in found})
    used = [column for column in columns if any((row, column) in cells for row in rows)]
    width = max([len("guarantee"), *map(len, rows)])
    order = ("failed", "error", "passed", "xfailed", "skipped")

    def cell(results: set[str] | None) -> str:
        if not results:
            return "-"
        return "/".join(MARKS[result] for result in order if result in results)

    lines = ["guarantee".ljust(width) + "  " + "  ".join(f"{column:>13}" for column in used)]
    for row in rows:
        lines.append(row.ljust(width) + "  " + "  ".join(f"{cell(cells.get((row, c))):>13}" for c in used))
    failed = sum(1 for outcome in found if outcome.result == "failed")
    lines.append(f"{len(found)} tests, {failed} failed")
    return "\n".join(lines)


def locked_versions(lock_text: str) -> dict[str, str]:
    return {
        package["name"]: package["version"]
        for package in tomllib.loads(lock_text)["package"]
        if "version" in package
    }


def direct_dependencies(pyproject_text: str) -> list[str]:
    project = tomllib.loads(pyproject_text)["project"]
    extras = project.get("optional-dependencies", {}).values()
    lines = [*project["dependencies"], *(line for extra in extras for line in extra)]
    return sorted({Requirement(line).name for line in lines})


def moved(old: dict[str, str], new: dict[str, str], names: Sequence[str]) -> list[str]:
    return [
        f"{name}: {old.get(name, '-')} -> {new[name]}"
        for name in names
        if name in new and old.get(name) != new[name]
    ]


def _run(command: Sequence[str | Path], **kwargs: object) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run(list(map(str, command)), check=True, **kwargs)  # type: ignore[call-overload]


def prepare(uv: str) -> dict[str, str]:
    """Lock the newest releases in .upstream/ and install them into .upstream/venv; their versions."""
    project = WORK / "project"
    shutil.rmtree(WORK, ignore_errors=True)
    project.mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    _run([uv, "lock", "--upgrade", "--directory", project])
    requirements = WORK / "requirements.txt"
    _run(
        [
            uv,
            "export",
            "--directory",
            project,
            "--frozen",
            "--no-hashes",
            "--all-extras",
            "--all-groups",
            "--no-emit-project",
            "--output-file",
            requirements,
        ],
        stdout=subprocess.DEVNULL,
    )
    venv = WORK / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, venv])
    python = venv / "bin" / "python"
    _run([uv, "pip", "install", "--quiet", "--python", python, "-r", requirements])
    _run([uv, "pip", "install", "--quiet", "--python", python, "--no-deps", "--editable", ROOT])
    return locked_versions((project / "uv.lock").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--uv", default="uv", help="the uv to lock and install with")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    newest = prepare(args.uv)
    locked = locked_versions((ROOT / "uv.lock").read_text())
    changes = moved(locked, newest, direct_dependencies((ROOT / "pyproject.toml").read_text()))
    report = WORK / "results.xml"
    command: list[str | Path] = [
        WORK / "venv" / "bin" / "python",
        "-m",
        "pytest",
        *SUITES,
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
        "-q",
        *args.pytest_args,
    ]
    print("+", " ".join(map(str, command)), flush=True)
    code = subprocess.run(list(map(str, command)), cwd=ROOT, check=False).returncode
    print("\nReleases newer than uv.lock:")
    print("\n".join(f"  {line}" for line in changes) or "  none: uv.lock is current")
    if report.exists():
        print("\nGuarantees on those releases, by profile:")
        print(table(outcomes(report.read_text())))
    return code


if __name__ == "__main__":
    sys.exit(main())
