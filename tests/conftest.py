from __future__ import annotations

import contextlib
import functools
import inspect
import re
import signal
import subprocess
import sys
from typing import Any

import pytest

from devkit.process import REPO_ROOT, clean_environ

# A test that names a demo path (in its code or its parameters) needs the demo routes.
DEMO_PATH = re.compile(r"/(echo|ws|events|rooms)\b")
IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*\b")
DATA = (str, bytes, tuple, list, dict, frozenset, set)
# Directories whose tests serve the app as `service.main:app` does: they follow what it serves.
SERVED_APP_TESTS = ("smoke", "resilience", "image")


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a non-interactive shell (`cmd &`, nohup, some CI
    # runners) inherits SIGINT ignored, and every server it starts would too: Ctrl-C tests
    # would then test nothing. Catching it here gives the servers the default, as a terminal does.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--base-url",
        default=None,
        help="run the HTTP smoke checks against an already-running deployment instead",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the served-app tests that use a demo route; leave them out when the app has none.

    A fork that builds its app with `create_app(..., demo_routes=False)` (docs/building.md)
    keeps a green suite: the tests of what it no longer serves are deselected, not failed.
    """
    demo = [item for item in items if _served_app_test(item) and _needs_demo_routes(item)]
    for item in demo:
        item.add_marker(pytest.mark.demo_routes)
    if demo and not _served_app_has_demo_routes():
        config.hook.pytest_deselected(items=demo)
        chosen = set(map(id, demo))
        items[:] = [item for item in items if id(item) not in chosen]


def _served_app_test(item: pytest.Item) -> bool:
    parts = item.path.relative_to(REPO_ROOT).parts
    return len(parts) > 1 and parts[0] == "tests" and parts[1] in SERVED_APP_TESTS


def _needs_demo_routes(item: pytest.Item) -> bool:
    """The test, its parameters, or what it names in its module (helpers, fixtures, constants,
    followed through their own names) mention a demo path."""
    if item.get_closest_marker("demo_routes") is not None:
        return True
    if item.get_closest_marker("own_app") is not None:
        return False
    function = getattr(item, "function", None)
    module = getattr(item, "module", None)
    if function is None or module is None:
        return False
    params = getattr(getattr(item, "callspec", None), "params", {})
    if DEMO_PATH.search(repr(params)):
        return True
    names = vars(module)
    pending: list[Any] = [function, *(names[name] for name in item.fixturenames if name in names)]
    seen: set[int] = set()
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if not callable(value):
            if DEMO_PATH.search(repr(value)):
                return True
            continue
        source = _source(value)
        if DEMO_PATH.search(source):
            return True
        pending += [names[name] for name in IDENTIFIER.findall(source) if _followed(names.get(name))]
    return False


def _source(value: Any) -> str:
    with contextlib.suppress(TypeError, OSError):
        return inspect.getsource(inspect.unwrap(value))
    return ""


def _followed(value: Any) -> bool:
    """Functions (fixtures included) and plain data; not modules or classes of other packages."""
    return inspect.isfunction(inspect.unwrap(value)) if callable(value) else isinstance(value, DATA)


@functools.cache
def _served_app_has_demo_routes() -> bool:
    """Whether `service.main:app`, imported as a server would (clean environment), serves the demo."""
    probe = "from service.main import app; print(app.state.demo_routes)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=clean_environ({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip() == "True"
