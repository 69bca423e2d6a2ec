"""The development loop (`APP_RELOAD=true`, `make dev`): restart the server when the code changes.

One reloader for every profile, rather than each server's own: uvicorn's, hypercorn's,
granian's and gunicorn's watch different files, need different extras (watchfiles),
and a syntax error kills some of them. This one:

- polls the modification times of the `.py` files under the app's package (and
  `service/`) and of the `.env` file, twice a second: no file events needed, so
  it works the same inside a container or on a mounted volume;
- on a change, compiles the changed `.py` files first: a syntax error is printed
  once, as one line, and the running server keeps serving the last good code
  until the next save;
- then imports the app once in a throwaway interpreter: an error raised while
  importing it (a NameError at module level, a bad setting in `.env`) is printed
  as one line naming the file and line, and the last good code keeps serving too;
- otherwise stops the server (SIGTERM, as in production, then SIGKILL after the
  graceful timeout) and starts it again: `python -m deploy <profile>` as a child,
  with `APP_RELOAD=false` and no drain window;
- a server that exits by itself is reported once and started again at the next change.

`python -m deploy.reload APP` is that import check: exit 0, or 1 with the one line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pkgutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from deploy.worker_timing import KILL_BACKSTOP_SECONDS
from service.settings import DEFAULT_ENV_FILE, Settings, env_name

FILE_POLL_SECONDS = 0.5

Snapshot = dict[Path, int]


def watched_roots(settings: Settings) -> list[Path]:
    """The app's top-level package and `service/`, as found from the current directory."""
    roots = []
    for module in (settings.asgi_app.partition(":")[0].partition(".")[0], "service"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin is not None:
            origin = Path(spec.origin)
            root = origin.parent if origin.name == "__init__.py" else origin
            if root not in roots:
                roots.append(root)
    return roots


def snapshot(roots: list[Path], env_file: Path) -> Snapshot:
    files: Snapshot = {}
    for root in roots:
        paths = root.rglob("*.py") if root.is_dir() else [root]
        for path in paths:
            with contextlib.suppress(OSError):  # removed between listing and stat
                files[path] = path.stat().st_mtime_ns
    with contextlib.suppress(OSError):
        files[env_file] = env_file.stat().st_mtime_ns
    return files


def changed(before: Snapshot, after: Snapshot) -> list[Path]:
    return sorted({path for path in before.keys() | after.keys() if before.get(path) != after.get(path)})


def syntax_error(paths: list[Path]) -> str | None:
    """One line naming the first syntax error in `paths`, or None."""
    for path in paths:
        if path.suffix != ".py" or not path.is_file():
            continue
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except SyntaxError as error:
            return f"{path}:{error.lineno}: {error.msg}"
    return None


def import_problem(target: str) -> str | None:
    """Import the app `module:attribute` here; one line naming where it failed, or None."""
    try:
        pkgutil.resolve_name(target)
    except Exception as error:  # whatever the edit broke, in one line
        frames = traceback.extract_tb(error.__traceback__)
        here = Path.cwd()
        # The innermost frame in this project's code, not in importlib's or a library's.
        ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(here)] or frames
        where = f"{ours[-1].filename}:{ours[-1].lineno}: " if ours else ""
        text = str(error).splitlines()[0] if str(error) else ""
        return f"{where}{type(error).__name__}: {text}"
    return None


def check_import(target: str, env: dict[str, str]) -> str | None:
    """`import_problem` in a fresh interpreter, so the check sees the code as it now is on disk."""
    result = subprocess.run(  # noqa: S603 - this interpreter, this module, a validated import string
        [sys.executable, "-m", "deploy.reload", target], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    if result.returncode == 0:
        return None
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


class Reloader:
    def __init__(self, profile: str, settings: Settings) -> None:
        self.profile = profile
        self.asgi_app = settings.asgi_app
        self.graceful_timeout = settings.graceful_timeout
        self.roots = watched_roots(settings)
        self.env_file = DEFAULT_ENV_FILE
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.exit_reported = False

    def say(self, message: str) -> None:
        print(f"asgi-deploy reload: {message}", file=sys.stderr, flush=True)

    def child_env(self) -> dict[str, str]:
        return {**os.environ, env_name("reload"): "false", env_name("drain_seconds"): "0"}

    def start(self) -> None:
        env = self.child_env()
        # Its own process group: a terminal's Ctrl-C reaches the server once, through here.
        self.child = subprocess.Popen(  # noqa: S603 - this interpreter, a validated profile name
            [sys.executable, "-m", "deploy", self.profile], env=env, process_group=0
        )
        self.exit_reported = False

    def stop_child(self) -> int | None:
        child = self.child
        if child is None:
            return None
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=self.graceful_timeout + KILL_BACKSTOP_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.child = None
        return child.returncode

    def request_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        watched = ", ".join(str(root) for root in self.roots)
        self.say(f"watching {watched} and {self.env_file} (polling every {FILE_POLL_SECONDS}s)")
        before = snapshot(self.roots, self.env_file)
        self.start()
        while not self.stopping:
            time.sleep(FILE_POLL_SECONDS)
            self.report_exit()
            after = snapshot(self.roots, self.env_file)
            edited = changed(before, after)
            if not edited:
                continue
            before = after
            problem = syntax_error(edited)
            if problem is not None:
                self.say(f"syntax error, still serving the last good code: {problem}")
                continue
            problem = check_import(self.asgi_app, self.child_env())
            if problem is not None:
                self.say(f"the app does not import, still serving the last good code: {problem}")
                continue
            self.say(f"{edited[0]} changed: restarting")
            self.stop_child()
            if not self.stopping:
                self.start()
        code = self.stop_child()
        return 0 if code is None or code < 0 else code

    def report_exit(self) -> None:
        child = self.child
        if child is not None and child.poll() is not None and not self.exit_reported:
            self.exit_reported = True
            self.say(f"the server exited with status {child.returncode}; waiting for the next change")


def run(profile: str, settings: Settings) -> int:
    return Reloader(profile, settings).run()


if __name__ == "__main__":
    found = import_problem(sys.argv[1])
    if found is not None:
        print(found)
    sys.exit(0 if found is None else 1)
