"""Launch one profile exactly as users do (`python -m deploy <profile>`), watch it, always stop it."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.02


class ServerError(Exception):
    """The server exited or never became ready; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def server_environ(port: int, workers: int, asgi_app: str) -> dict[str, str]:
    """The caller's environment without any APP_* of its own, plus the benchmark's settings."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APP_")}
    env.update(
        {
            "APP_HOST": LOOPBACK,
            "APP_PORT": str(port),
            "APP_WORKERS": str(workers),
            "APP_ACCESS_LOG": "false",
            "APP_DRAIN_SECONDS": "0",  # stop at once: a drain window would add seconds per point
            "APP_LOG_LEVEL": "warning",
            "APP_ASGI_APP": asgi_app,
        }
    )
    return env


def launch_command(profile: str) -> list[str]:
    """What `make run-<profile>` execs."""
    return [sys.executable, "-m", "deploy", profile]


@dataclass
class Server:
    profile: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, path: str, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Poll `GET path` until it answers 200; return the seconds since launch."""
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.profile} exited with {self.process.returncode} before ready:\n{self.log_tail()}"
                )
            if self._get_status(path) == 200:
                elapsed = time.monotonic() - self.started_at
                self.remember_family()
                return elapsed
            time.sleep(POLL_SECONDS)
        raise ServerError(f"{self.profile} not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def _get_status(self, path: str) -> int | None:
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=1.0)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()

    def worker_processes(self) -> list[psutil.Process]:
        """Descendants holding the listening socket (the processes serving requests).

        A single-process server has no such descendant: then the launcher itself serves.
        """
        launcher = psutil.Process(self.process.pid)
        workers = [child for child in launcher.children(recursive=True) if self._listens(child)]
        return workers or [launcher]

    def _listens(self, proc: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == self.port:
                    return True
        return False

    def worker_rss(self) -> list[int]:
        """Resident set size in bytes of each worker process."""
        sizes = []
        for proc in self.worker_processes():
            with contextlib.suppress(psutil.Error):
                sizes.append(int(proc.memory_info().rss))
        return sizes

    def remember_family(self) -> None:
        """Note every descendant now, so `stop` finds them even once orphaned."""
        with contextlib.suppress(psutil.Error):
            launcher = psutil.Process(self.process.pid)
            for proc in [launcher, *launcher.children(recursive=True)]:
                self.seen.setdefault(proc.pid, proc)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM the launcher by PID; after `timeout`, SIGKILL it and every descendant ever seen."""
        self.remember_family()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        self.remember_family()
        family = list(self.seen.values())
        for proc in family:
            # psutil checks the creation time: a PID reused by another process is never signalled.
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        psutil.wait_procs(family, timeout=5)
        return self.process.returncode


@contextlib.contextmanager
def running_server(profile: str, asgi_app: str, workers: int) -> Iterator[Server]:
    """Start `python -m deploy <profile>` on a free loopback port; stop it whatever happens."""
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix=f"bench-{profile}-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        started_at = time.monotonic()
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            launch_command(profile),
            cwd=REPO_ROOT,
            env=server_environ(port, workers, asgi_app),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C in the terminal reaches only the harness,
            # which then stops the server by PID (SIGTERM, then SIGKILL).
            process_group=0,
        )
    server = Server(profile, port, process, log_path, started_at)
    try:
        yield server
    finally:
        server.stop()
        log_path.unlink(missing_ok=True)
