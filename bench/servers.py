"""The benchmark's server: launched and stopped as the tests' are (devkit/process.py), but quiet.

Only what the bench needs beyond the tests is here: its settings, a longer wait for
many workers on a busy machine, an error it can record and go on, and memory per worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import psutil

from devkit.process import ServerProcess, launched

LOG_TAIL_LINES = 20


class ServerError(Exception):
    """The server exited or never became ready; the message carries the tail of its log."""


def bench_settings(workers: int, asgi_app: str, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """The production defaults (JSON logs, access line on, level info), as users run them, plus `settings`."""
    return {
        "APP_ENV": "production",
        "APP_WORKERS": str(workers),
        "APP_DRAIN_SECONDS": "0",  # stop at once: a drain window would add seconds per point
        "APP_ASGI_APP": asgi_app,
        **(settings or {}),
    }


class Server(ServerProcess):
    ready_timeout = 60.0
    own_process_group = True
    # Long enough to exit on its own: the results record the server's own exit status.
    stop_timeout = 10.0

    def not_ready(self, reason: str) -> Exception:
        # One failed server among many in a results table: the end of its log says why.
        tail = "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:])
        return ServerError(f"{self.profile} {reason}:\n{tail}")

    def worker_processes(self) -> list[psutil.Process]:
        """The processes serving requests: a single-process server's launcher serves itself."""
        return self.listening_workers() or [psutil.Process(self.pid)]

    def worker_cpu_seconds(self) -> dict[int, float]:
        """CPU time (user + system) each worker process has used so far, by PID."""
        used = {}
        for proc in self.worker_processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                used[proc.pid] = times.user + times.system
        return used

    def worker_rss(self) -> list[int]:
        """Resident set size in bytes of each worker process."""
        sizes = []
        for proc in self.worker_processes():
            with contextlib.suppress(psutil.Error):
                sizes.append(int(proc.memory_info().rss))
        return sizes


@contextlib.contextmanager
def running_server(
    profile: str, asgi_app: str, workers: int, settings: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """Start `python -m deploy <profile>` on a free loopback port; stop it whatever happens."""
    with launched(Server, profile, bench_settings(workers, asgi_app, settings)) as server:
        yield server
