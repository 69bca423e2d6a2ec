"""deploy/certificate_watch.py's decisions, one poll at a time, and a worker's refusal of a broken pair
(deploy/tls_options.py), on certificates made here (no server)."""

from __future__ import annotations

import logging
import shutil
import ssl
from pathlib import Path

import pytest
import trustme
from gunicorn.arbiter import Arbiter

from deploy import hypercorn as hypercorn_adapter
from deploy.certificate_watch import CertificateWatch, watch_certificates
from deploy.supervisor import needs_supervisor
from deploy.tls_options import WORKER_BOOT_ERROR, MinimumVersionHook
from service.settings import Settings
from tests.support.certs import make_certificates


class Pair:
    """tls.crt and tls.key, as the service is configured with them."""

    def __init__(self, directory: Path) -> None:
        self.certs = make_certificates(directory / "made")
        self.cert, self.key = directory / "tls.crt", directory / "tls.key"
        self.put(self.certs.cert, self.certs.key)

    def put(self, cert: Path, key: Path) -> None:
        shutil.copyfile(cert, self.cert)
        shutil.copyfile(key, self.key)


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair(tmp_path)


def watch(pair: Pair, changes: list[int]) -> CertificateWatch:
    return CertificateWatch(pair.cert, pair.key, None, on_change=lambda: changes.append(1))


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_nothing_happens_while_the_files_stay_the_same(pair: Pair) -> None:
    changes: list[int] = []
    watcher = watch(pair, changes)
    pair.put(pair.certs.cert, pair.certs.key)  # written again, same content
    watcher.poll()
    assert changes == []


def test_a_new_valid_pair_reloads_once(pair: Pair) -> None:
    changes: list[int] = []
    watcher = watch(pair, changes)
    pair.put(pair.certs.renewed, pair.certs.renewed_key)
    watcher.poll()
    watcher.poll()
    assert changes == [1]


@pytest.mark.parametrize(
    ("cert", "key", "reason"),
    [
        ("renewed", "other_key", "does not match"),
        ("expired", "expired_key", "expired on"),
        ("not_yet_valid", "not_yet_valid_key", "not valid before"),
    ],
)
def test_a_broken_pair_is_refused_in_one_line_and_not_served(
    pair: Pair, caplog: pytest.LogCaptureFixture, cert: str, key: str, reason: str
) -> None:
    changes: list[int] = []
    watcher = watch(pair, changes)
    pair.put(getattr(pair.certs, cert), getattr(pair.certs, key))
    with caplog.at_level(logging.INFO, logger="deploy.certificates"):
        watcher.poll()
        watcher.poll()  # the same broken content: not refused twice
    assert changes == []
    (line,) = refusals(caplog)
    assert reason in line
    assert "APP_TLS_" in line


def test_a_half_written_certificate_is_refused_then_served_once_complete(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    changes: list[int] = []
    watcher = watch(pair, changes)
    renewed = pair.certs.renewed.read_bytes()
    with caplog.at_level(logging.INFO, logger="deploy.certificates"):
        pair.cert.write_bytes(renewed[: len(renewed) // 2])
        watcher.poll()
        assert changes == []
        assert len(refusals(caplog)) == 1
        pair.put(pair.certs.renewed, pair.certs.renewed_key)
        watcher.poll()
    assert changes == [1]


def test_files_changing_while_checked_are_checked_again_at_the_next_poll(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    changes: list[int] = []
    watcher = watch(pair, changes)
    pair.put(pair.certs.renewed, pair.certs.renewed_key)
    fingerprints = iter([b"while checked", b"after the check"])
    real = watcher.fingerprint
    watcher.fingerprint = lambda: next(fingerprints, None) or real()  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="deploy.certificates"):
        watcher.poll()  # saw one content, then another: nothing decided
        assert changes == []
        watcher.poll()
    assert changes == [1]
    assert refusals(caplog) == []


def test_no_reload_before_the_server_can_take_one(pair: Pair) -> None:
    changes: list[int] = []
    ready = False
    watcher = CertificateWatch(
        pair.cert, pair.key, None, on_change=lambda: changes.append(1), ready=lambda: ready
    )
    pair.put(pair.certs.renewed, pair.certs.renewed_key)
    watcher.poll()
    assert changes == []
    ready = True
    watcher.poll()
    assert changes == [1]


def test_the_paths_are_read_as_configured_through_a_swapped_symlink(tmp_path: Path) -> None:
    ca = trustme.CA()
    volume = tmp_path / "tls"
    volume.mkdir()
    for generation in ("..2026_01", "..2026_02"):
        (volume / generation).mkdir()
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(volume / generation / "tls.crt"))
        issued.private_key_pem.write_to_path(str(volume / generation / "tls.key"))
    (volume / "..data").symlink_to("..2026_01")
    for name in ("tls.crt", "tls.key"):
        (volume / name).symlink_to(f"..data/{name}")
    changes: list[int] = []
    watcher = CertificateWatch(volume / "tls.crt", volume / "tls.key", None, lambda: changes.append(1))
    (volume / "..data_tmp").symlink_to("..2026_02")
    (volume / "..data_tmp").replace(volume / "..data")
    shutil.rmtree(volume / "..2026_01")
    watcher.poll()
    assert changes == [1]


def test_a_worker_that_cannot_load_the_pair_fails_to_boot_instead_of_serving_cleartext(pair: Pair) -> None:
    def broken() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.certs.renewed, pair.certs.other_key)
        return context

    with pytest.raises(SystemExit) as stopped:
        MinimumVersionHook("1.3")(None, broken)
    assert stopped.value.code == WORKER_BOOT_ERROR == Arbiter.WORKER_BOOT_ERROR  # the arbiter then stops


def test_a_worker_that_loads_the_pair_gets_the_minimum_version(pair: Pair) -> None:
    def good() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert, pair.key)
        return context

    assert MinimumVersionHook("1.3")(None, good).minimum_version == ssl.TLSVersion.TLSv1_3


def test_tls_puts_a_supervisor_in_front_unless_h3_needs_the_one_process(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    tls = {"tls_cert_file": pair.cert, "tls_key_file": pair.key, "workers": 1, "worker_timeout": 0}
    rotating = Settings(**tls)
    assert needs_supervisor(rotating)  # a renewed certificate is served by replacing the worker
    assert hypercorn_adapter.launch_config(rotating).server["workers"] == 1
    quic = Settings(**tls, http_versions=("http/1.1", "h3"))
    assert not needs_supervisor(quic)
    assert hypercorn_adapter.launch_config(quic).server["workers"] == 0  # served in this process
    with caplog.at_level(logging.WARNING, logger="deploy.certificates"):
        assert watch_certificates(quic) is None  # said once, not watched in vain
    assert [r.getMessage() for r in caplog.records] == [
        "TLS files not watched: with h3 the server is one process, which cannot be replaced with "
        "overlap; a renewed certificate is served after a restart (docs/production.md)"
    ]
