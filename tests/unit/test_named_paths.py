"""Every repository path that a comment, docstring or doc names exists: prose cannot point at a moved file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("service", "deploy", "devkit", "bench", "tests", "docs", "k8s", ".github", ".ci")
# A path as prose writes it: a top folder, then name parts; a glob or placeholder is not a path.
TOPS = "|".join(re.escape(top) for top in TOP)
NAMED = re.compile(rf"(?<![\w./-])((?:{TOPS})/[\w./-]*[\w/])")
PLACEHOLDER = re.compile(r"[<>{}*]|\bNAME\b|\bX\b")
# Words that look like paths and are not, each with what it is.
NOT_PATHS = {
    "service/bare": "a ratio: the service's figure over bare FastAPI's",
    "service/asgi-deploy": "a kubectl resource: the Service",
    "deploy/asgi-deploy": "a kubectl resource: the Deployment",
    "k8s/overlays/production": "the overlay the reader is told to create",
}
TEXT = (".py", ".md", ".toml", ".yaml", ".yml", ".sh", "Makefile", "Dockerfile", ".cfg", ".ini", "run")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    ).stdout.split("\0")
    return [ROOT / name for name in listed if name and name.endswith(TEXT) and (ROOT / name).is_file()]


def named_paths(text: str) -> set[str]:
    found = set()
    for match in NAMED.finditer(text):
        path = match.group(1).rstrip("./")
        end = match.end(1)
        if PLACEHOLDER.search(text[match.start(1) : end + 1]):
            continue
        found.add(path)
    return found


def test_named_paths_are_read_as_prose_writes_them() -> None:
    text = "see deploy/carried.py, `service/api/` and tests/unit/. Not k8s/overlays/<profile>/ nor x/deploy/y"
    assert named_paths(text) == {"deploy/carried.py", "service/api", "tests/unit"}


def test_every_named_path_exists() -> None:
    missing = []
    for file in tracked_text_files():
        for path in sorted(named_paths(file.read_text(errors="replace"))):
            if any(path == word or path.startswith(f"{word}/") for word in NOT_PATHS):
                continue
            # A Markdown link is relative to its page.
            relative = file.suffix == ".md" and (file.parent / path).exists()
            if not (ROOT / path).exists() and not relative:
                missing.append(f"{file.relative_to(ROOT)}: {path}")
    assert not missing, "\n".join(missing)


def test_no_two_modules_of_the_app_and_the_launcher_share_a_name() -> None:
    # A name says what a module holds: two `drain.py` or `metrics.py` with different jobs
    # make every import and every mention in prose ambiguous.
    modules: dict[str, list[str]] = {}
    for path in tracked_text_files():
        relative = path.relative_to(ROOT)
        if relative.parts[0] in {"service", "deploy"} and path.suffix == ".py" and path.name != "__init__.py":
            modules.setdefault(path.name, []).append(str(relative))
    assert {name: paths for name, paths in modules.items() if len(paths) > 1} == {}


TIMING = re.compile(r"^([A-Z][A-Z0-9_]*_(?:SECONDS|MS))\b[^=\n]*=", re.MULTILINE)


def test_each_timing_constant_is_defined_once() -> None:
    # One name, one value: a second definition drifts, and prose quoting one of them is wrong.
    defined: dict[str, list[str]] = {}
    for path in tracked_text_files():
        relative = path.relative_to(ROOT)
        if relative.parts[0] in {"service", "deploy"} and path.suffix == ".py":
            for name in TIMING.findall(path.read_text()):
                defined.setdefault(name, []).append(str(relative))
    assert {name: paths for name, paths in defined.items() if len(paths) > 1} == {}
