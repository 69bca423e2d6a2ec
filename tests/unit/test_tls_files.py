"""The launcher's TLS file checks (service/tls.py) on certificates made here, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from service.settings import SettingsError
from service.tls import certificate_validity, check_tls_files

# Before 2050 X.509 writes UTCTime (two-digit years), from 2050 GeneralizedTime: both are read.
DATES = [
    (datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
    (datetime(2050, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)),
]


def write_pair(directory: Path, ca: trustme.CA, name: str, **dates: datetime) -> tuple[Path, Path]:
    issued = ca.issue_cert("127.0.0.1", not_before=dates.get("not_before"), not_after=dates.get("not_after"))
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.mark.parametrize(("not_before", "not_after"), DATES)
def test_the_validity_dates_are_read_from_the_certificate(
    tmp_path: Path, not_before: datetime, not_after: datetime
) -> None:
    cert, _ = write_pair(tmp_path, trustme.CA(), "c", not_before=not_before, not_after=not_after)
    validity = certificate_validity(cert)
    assert (validity.not_before, validity.not_after) == (not_before, not_after)


def test_a_good_pair_and_client_ca_pass(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = write_pair(tmp_path, ca, "good")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    check_tls_files(cert, key, tmp_path / "ca.pem")


def test_each_bad_file_is_refused_in_one_line_naming_its_variable(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = write_pair(tmp_path, ca, "good")
    _, other_key = write_pair(tmp_path, ca, "other")
    old, old_key = write_pair(
        tmp_path,
        ca,
        "old",
        not_before=datetime(2019, 1, 1, tzinfo=UTC),
        not_after=datetime(2020, 1, 1, tzinfo=UTC),
    )
    cases = [
        ((cert, other_key, None), "APP_TLS_KEY_FILE=", "does not match the certificate"),
        ((old, old_key, None), "APP_TLS_CERT_FILE=", "expired on 2020-01-01 00:00:00 UTC"),
        ((tmp_path / "none.pem", key, None), "APP_TLS_CERT_FILE=", "No such file"),
        ((key, key, None), "APP_TLS_CERT_FILE=", "no PEM certificate in it"),
        ((cert, cert, None), "APP_TLS_KEY_FILE=", "not an unencrypted PEM private key"),
        ((cert, key, key), "APP_TLS_CLIENT_CA_FILE=", "no PEM CA certificate in it"),
        ((cert, key, tmp_path), "APP_TLS_CLIENT_CA_FILE=", "Is a directory"),
    ]
    for files, variable, reason in cases:
        with pytest.raises(SettingsError) as refused:
            check_tls_files(*files)
        line = str(refused.value)
        assert "\n" not in line
        assert line.startswith(variable), line
        assert reason in line, line
        assert "PRIVATE KEY" not in line
