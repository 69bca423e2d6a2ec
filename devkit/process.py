"""Start a server profile as a real process, exactly as `make run-<profile>` does, and always stop it.

The test suite and the benchmark (bench/servers.py) both launch servers through here:
what the bench measures is what the tests check, and both clean up the same way.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
POLL_SECONDS = 0.02  # fine enough to time a start-up (the bench reports it)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any APP_* of its own, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APP_")}
    env.update(extra)
    return env


def launch_command(profile: str) -> list[str]:
    """The command `make run-<profile>` execs."""
    return [sys.executable, "-m", "deploy", profile]


@dataclass
class ServerProcess:
    """One launched server, and every process of its family seen so far (to stop them by PID)."""

    ready_timeout: ClassVar[float] = 30.0
    # In the harness's process group (the default), a cancelled test run takes its servers
    # down with it; the bench, run from a terminal, gives them their own (see launched()).
    own_process_group: ClassVar[bool] = False
    stop_timeout: ClassVar[float] = 3.0  # drain is off by default: a healthy server is out well before
    # Set for a server that serves HTTPS: its base URL and readiness poll speak TLS with this context.
    client_context: ClassVar[ssl.SSLContext | None] = None

    profile: str
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        scheme = "http" if self.client_context is None else "https"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def not_ready(self, reason: str) -> Exception:
        """What `wait_ready` raises: a test failure, with the whole log to tell why."""
        return AssertionError(f"{self.profile} {reason}:\n{self.log()}")

    def wait_ready(self, path: str = "/readyz", timeout: float | None = None) -> float:
        """Poll until `GET path` answers 200; return the seconds since launch."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.not_ready(f"exited with {self.process.returncode} before ready")
            if self._get_status(path) == 200:
                self.remember_family()
                return time.monotonic() - self.started_at
            time.sleep(POLL_SECONDS)
        raise self.not_ready(f"not ready within {timeout:.0f}s")

    def _get_status(self, path: str) -> int | None:
        connection = (
            http.client.HTTPConnection(LOOPBACK, self.port, timeout=1.0)
            if self.client_context is None
            else http.client.HTTPSConnection(LOOPBACK, self.port, timeout=1.0, context=self.client_context)
        )
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()

    def listening_workers(self) -> list[psutil.Process]:
        """Descendants holding the listening socket that hand it no further down: the processes that
        serve requests. A supervisor or arbiter the launcher forked (with a drain window) holds the
        socket too, for its workers: it is not one."""
        launcher = psutil.Process(self.pid)
        listening = [child for child in launcher.children(recursive=True) if self._listens(child)]
        pids = {proc.pid for proc in listening}
        return [proc for proc in listening if not pids & self._descendants(proc)]

    @staticmethod
    def _descendants(proc: psutil.Process) -> set[int]:
        with contextlib.suppress(psutil.Error):
            return {child.pid for child in proc.children(recursive=True)}
        return set()

    def worker_pids(self) -> set[int]:
        return {proc.pid for proc in self.listening_workers()}

    def _listens(self, proc: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == self.port:
                    return True
        return False

    def remember_family(self) -> None:
        """Note every descendant now, so cleanup finds them even once orphaned."""
        with contextlib.suppress(psutil.Error):
            launcher = psutil.Process(self.pid)
            for proc in [launcher, *launcher.children(recursive=True)]:
                self.seen.setdefault(proc.pid, proc)

    def signal(self, signum: int) -> None:
        self.remember_family()
        # Through Popen: once it has reaped the launcher it sends nothing, so never to a reused PID.
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the launcher; after `timeout`, SIGKILL it and every descendant ever seen."""
        self.remember_family()
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=self.stop_timeout if timeout is None else timeout)
        self.kill_all()
        return self.process.returncode

    def kill_all(self) -> None:
        """Last-resort cleanup: SIGKILL the launcher and every descendant ever seen, by PID."""
        self.remember_family()
        family = list(self.seen.values())
        for proc in family:
            # psutil compares creation times: a PID reused by another process is never signalled.
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        psutil.wait_procs(family, timeout=5)


def refused_at_startup(profile: str, env: Mapping[str, str]) -> str:
    """Launch `profile` with settings it must refuse; assert exit 2 with one line, and return it."""
    result = subprocess.run(
        launch_command(profile),
        cwd=REPO_ROOT,
        env=clean_environ(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


ServerT = TypeVar("ServerT", bound=ServerProcess)


@contextlib.contextmanager
def launched(
    kind: type[ServerT],
    profile: str,
    env: Mapping[str, str],
    port: int | None = None,
    cwd: Path = REPO_ROOT,
) -> Iterator[ServerT]:
    """Start `python -m deploy <profile>` in `cwd` on a loopback port (a free one unless given);
    stop it whatever happens.

    `kind` is the class that watches it: `ServerProcess`, or the bench's own.
    """
    port = free_port() if port is None else port
    # No drain window unless the caller asks for one: it would add seconds to every stop.
    defaults = {"APP_HOST": LOOPBACK, "APP_PORT": str(port), "APP_DRAIN_SECONDS": "0"}
    full_env = clean_environ({**defaults, **env})
    with tempfile.NamedTemporaryFile(prefix=f"{profile}-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        started_at = time.monotonic()
        process = subprocess.Popen(
            launch_command(profile),
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # With its own process group, a Ctrl-C in the terminal reaches only the
            # harness, which then stops the server by PID (SIGTERM, then SIGKILL).
            process_group=0 if kind.own_process_group else None,
        )
    server = kind(profile, full_env, port, process, log_path, started_at)
    try:
        yield server
    finally:
        server.stop()
        log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def running_server(
    profile: str, env: Mapping[str, str] | None = None, wait_ready: bool = True, port: int | None = None
) -> Iterator[ServerProcess]:
    with launched(ServerProcess, profile, env or {}, port) as server:
        if wait_ready:
            server.wait_ready()
        yield server
