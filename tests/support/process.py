"""Start a server profile as a real process, exactly as `make run-<profile>` does, and always stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any APP_* of its own, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APP_")}
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    profile: str
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, path: str = "/readyz", timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Poll until `path` answers 200; return seconds since launch."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.profile} exited with {self.process.returncode} before ready:\n{self.log()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + path, timeout=1.0).status_code == 200:
                    self.remember_family()
                    return time.monotonic() - self.started_at
            time.sleep(0.05)
        raise AssertionError(f"{self.profile} not ready within {timeout}s:\n{self.log()}")

    def worker_pids(self) -> set[int]:
        """Descendants holding the listening socket: the processes that serve requests."""
        parent = psutil.Process(self.pid)
        workers = set()
        for child in parent.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                for conn in child.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == self.port:
                        workers.add(child.pid)
                        break
        return workers

    def remember_family(self) -> None:
        """Note every descendant now, so cleanup can find them even once orphaned."""
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(self.pid)
            for proc in [parent, *parent.children(recursive=True)]:
                self.seen.setdefault(proc.pid, proc)

    def signal(self, signum: int) -> None:
        self.remember_family()
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill_all(self) -> None:
        """Last-resort cleanup: SIGKILL the launcher and every descendant ever seen, by PID."""
        self.remember_family()
        family = list(self.seen.values())
        for proc in family:
            # psutil refuses to signal a PID that was reused by another process.
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        psutil.wait_procs(family, timeout=5)


def launch_command(profile: str) -> list[str]:
    """The command `make run-<profile>` execs."""
    return [sys.executable, "-m", "deploy", profile]


@contextlib.contextmanager
def running_server(
    profile: str, env: Mapping[str, str] | None = None, wait_ready: bool = True
) -> Iterator[ServerProcess]:
    port = free_port()
    # No drain window unless a test asks for one: it would add seconds to every stop.
    defaults = {"APP_HOST": LOOPBACK, "APP_PORT": str(port), "APP_DRAIN_SECONDS": "0"}
    full_env = clean_environ({**defaults, **(env or {})})
    with tempfile.NamedTemporaryFile(prefix=f"{profile}-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            launch_command(profile),
            cwd=REPO_ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(profile, full_env, port, process, log_path)
    try:
        if wait_ready:
            server.wait_ready()
        yield server
    finally:
        server.remember_family()
        if server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                server.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=3)
        server.kill_all()
        log_path.unlink(missing_ok=True)
