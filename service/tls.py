"""The TLS files of the settings, checked once by the launcher before any server starts.

Each server would otherwise fail on a bad file in its own way, most with a traceback from
every worker, and none refuses an expired certificate. The checks use the stdlib only:
`ssl` loads the pair (a key that does not match its certificate fails there), and the
certificate's validity dates are read from its DER encoding (`certificate_validity`).

Not checked again by each worker: a worker replaced after the certificate lapsed must still
boot (it serves what the server has loaded; the expiry metric is what alerts before that).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from service.settings_problems import SettingsError, env_name

__all__ = ["Validity", "certificate_validity", "check_tls_files", "minimum_version"]

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def minimum_version(setting: str) -> ssl.TLSVersion:
    """APP_TLS_MIN_VERSION as the ssl module's constant."""
    return _MIN_VERSIONS[setting]


@dataclass(frozen=True)
class Validity:
    not_before: datetime
    not_after: datetime


def check_tls_files(cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None) -> None:
    """Refuse, in one line naming the variable, a TLS file the server could not serve with."""
    if cert_file is None or key_file is None:
        return
    for name, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file)):
        _readable(name, path)
    if client_ca_file is not None:
        _readable("tls_client_ca_file", client_ca_file)
    validity = _validity_or_refuse(cert_file)
    now = datetime.now(UTC)
    if now < validity.not_before:
        _refuse(
            "tls_cert_file", cert_file, f"the certificate is not valid before {_when(validity.not_before)}"
        )
    if now >= validity.not_after:
        _refuse("tls_cert_file", cert_file, f"the certificate expired on {_when(validity.not_after)}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key gets an empty password instead of a prompt on the terminal.
        context.load_cert_chain(cert_file, key_file, password="")
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            _refuse("tls_key_file", key_file, f"the key does not match the certificate {cert_file}")
        detail = f" ({error.reason})" if error.reason else ""
        _refuse("tls_key_file", key_file, f"not an unencrypted PEM private key{detail}")
    if client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except ssl.SSLError as error:
            _refuse("tls_client_ca_file", client_ca_file, f"no PEM CA certificate in it ({error.reason})")


def certificate_validity(cert_file: Path) -> Validity:
    """The validity dates of the first certificate of a PEM file (ValueError if there is none)."""
    found = _PEM_CERTIFICATE.search(cert_file.read_bytes())
    if found is None:
        raise ValueError("no PEM certificate in it")
    der = ssl.PEM_cert_to_DER_cert(found.group().decode("ascii"))
    # Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    # signature, issuer, validity SEQUENCE { notBefore Time, notAfter Time }, ... }, ... }
    certificate = _children(der)[0][1]
    tbs = _children(_children(certificate)[0][1])
    fields = tbs[1:] if tbs[0][0] == 0xA0 else tbs
    not_before, not_after = _children(fields[3][1])
    return Validity(_time(*not_before), _time(*not_after))


def _children(der: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) elements of DER-encoded content, in order."""
    elements, at = [], 0
    while at < len(der):
        tag, length, at = der[at], der[at + 1], at + 2
        if length & 0x80:  # long form: the next (length & 0x7F) bytes hold the length
            size = length & 0x7F
            length, at = int.from_bytes(der[at : at + size], "big"), at + size
        if at + length > len(der):
            raise ValueError("truncated DER")
        elements.append((tag, der[at : at + length]))
        at += length
    return elements


def _time(tag: int, content: bytes) -> datetime:
    text = content.decode("ascii")
    formats = {0x17: "%y%m%d%H%M%SZ", 0x18: "%Y%m%d%H%M%SZ"}  # UTCTime, GeneralizedTime
    if tag not in formats:
        raise ValueError("not an ASN.1 time")
    return datetime.strptime(text, formats[tag]).replace(tzinfo=UTC)


def _validity_or_refuse(cert_file: Path) -> Validity:
    try:
        return certificate_validity(cert_file)
    except (ValueError, IndexError) as error:
        detail = str(error) if "PEM" in str(error) else "not a readable X.509 certificate"
        _refuse("tls_cert_file", cert_file, detail)


def _readable(name: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        _refuse(name, path, error.strerror or str(error))
    if not path.is_file():
        _refuse(name, path, "not a file")


def _refuse(name: str, path: Path, reason: str) -> NoReturn:
    raise SettingsError(f"{env_name(name)}={str(path)!r}: {reason}")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
