"""Throwaway certificates for TLS tests: a test CA, server and client certificates, and bad ones."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

from devkit.process import LOOPBACK, ServerProcess


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the test CA: trusted by clients, and the client CA of mutual TLS
    cert: Path  # server certificate, SAN 127.0.0.1
    key: Path
    client: Path  # client certificate and its key, signed by the CA
    other_key: Path  # a key that matches no certificate here
    expired: Path  # server certificate (for `key`'s twin, expired_key) that lapsed yesterday
    expired_key: Path
    not_yet_valid: Path
    not_yet_valid_key: Path
    renewed: Path  # another valid server certificate of the CA, for `renewed_key`: a rotation's
    renewed_key: Path

    def client_context(self, with_certificate: bool = True) -> ssl.SSLContext:
        """A client that trusts the test CA only and, for mutual TLS, presents its certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            context.load_cert_chain(self.client)
        return context

    def env(self) -> dict[str, str]:
        return {"APP_TLS_CERT_FILE": str(self.cert), "APP_TLS_KEY_FILE": str(self.key)}


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    now = datetime.now(UTC)

    def server(
        name: str, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> tuple[Path, Path]:
        issued = ca.issue_cert(LOOPBACK, not_before=not_before, not_after=not_after)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        return cert, key

    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert, key = server("server")
    _, other_key = server("other")
    expired, expired_key = server(
        "expired", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    future, future_key = server(
        "future", not_before=now + timedelta(days=1), not_after=now + timedelta(days=30)
    )
    # Valid for a shorter time than `cert`: the expiry metric tells which of the two is served.
    renewed, renewed_key = server("renewed", not_after=now + timedelta(days=90))
    client = directory / "client.pem"
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(str(client))
    return Certificates(
        ca=directory / "ca.pem",
        cert=cert,
        key=key,
        client=client,
        other_key=other_key,
        expired=expired,
        expired_key=expired_key,
        not_yet_valid=future,
        not_yet_valid_key=future_key,
        renewed=renewed,
        renewed_key=renewed_key,
    )


def tls_server(context: ssl.SSLContext) -> type[ServerProcess]:
    """A ServerProcess whose readiness poll and base URL speak HTTPS with this client context."""
    return type("TlsServer", (ServerProcess,), {"client_context": context})
