"""Certificate rotation without a restart: a changed TLS pair is a rolling reload (SIGHUP).

Every server reads its certificate when a worker starts, and every profile replaces its
workers on SIGHUP with overlap (deploy/supervisor.py for uvicorn and hypercorn, gunicorn's
arbiter, granian's respawn in deploy/granian_internals.py): a new worker serves before the
one it replaces stops, and that one finishes what it has. So a thread in the server's main
process reads the files every CERTIFICATE_POLL_SECONDS and, when their content changed and
the new pair passes the launcher's own checks (service/tls.py), sends the process SIGHUP.

The paths are read as configured, each time: a Kubernetes Secret volume swaps its `..data`
symlink atomically and removes the old directory, so a path resolved once would point
nowhere. A pair that fails the checks (key not matching, expired, not yet valid, half
written) is refused in one log line and the workers keep serving the old certificate; the
next change is checked again. Files that change while being read are read again at the next
poll, so a swap caught between the certificate and the key is not reported as a mismatch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from deploy.worker_timing import CERTIFICATE_POLL_SECONDS
from service.settings import Settings, SettingsError
from service.tls import check_tls_files

logger = logging.getLogger("deploy.certificates")


class CertificateWatch:
    """Calls `on_change()` once per new content of the TLS files that passes the checks."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None,
        on_change: Callable[[], None],
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.files = (cert_file, key_file, client_ca_file)
        self.on_change = on_change
        self.ready = ready  # False while nothing could act on a change yet: looked at again later
        self.seen = self.fingerprint()
        self.stopped = threading.Event()

    def fingerprint(self) -> bytes:
        digest = hashlib.sha256()
        for path in self.files:
            try:
                digest.update(b"-" if path is None else hashlib.sha256(path.read_bytes()).digest())
            except OSError as error:  # missing for a moment while being replaced: checked as a change
                digest.update(f"error {error.errno}".encode())
        return digest.digest()

    def poll(self) -> None:
        current = self.fingerprint()
        if current == self.seen or not self.ready():
            return
        problem = None
        try:
            check_tls_files(*self.files)
        except SettingsError as error:
            problem = str(error)
        if self.fingerprint() != current:
            return  # changed while checked: checked again, settled, at the next poll
        self.seen = current
        if problem is not None:
            logger.error("TLS files changed but refused, the served certificate stays: %s", problem)
            return
        logger.info("TLS files changed (%s): replacing every worker with overlap", self.files[0])
        self.on_change()

    def run(self) -> None:
        while not self.stopped.wait(CERTIFICATE_POLL_SECONDS):
            try:
                self.poll()
            except Exception:  # the watch must outlive any surprise; the service serves on
                logger.exception("checking the TLS files failed; trying again")

    def start(self) -> CertificateWatch:
        threading.Thread(target=self.run, name="certificate-watch", daemon=True).start()
        return self


def _has_reload_handler() -> bool:
    """The server has installed its SIGHUP handler (before it, SIGHUP would end the process)."""
    return signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)


def watch_certificates(settings: Settings) -> CertificateWatch | None:
    """In the server's main process: reload its workers when the TLS files change (None without TLS)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    if settings.quic_asked:
        logger.warning(
            "TLS files not watched: with h3 the server is one process, which cannot be replaced with "
            "overlap; a renewed certificate is served after a restart (docs/production.md)"
        )
        return None
    pid = os.getpid()
    return CertificateWatch(
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file,
        on_change=lambda: os.kill(pid, signal.SIGHUP),
        ready=_has_reload_handler,
    ).start()
