"""APP_HTTP_VERSIONS against each profile's `http` table (deploy/profile.py `HttpVersions`).

Table-driven: every set a profile declares, in cleartext and over TLS, lands as its native
value at the declared key; every other set of versions is refused in one line; unset means
the largest set without the versions served only when asked (h3). The smoke tests
(tests/smoke/test_tls.py, tests/smoke/test_http3.py) check the versions on the wire.
"""

from __future__ import annotations

import importlib.util
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from deploy.profile import HttpVersions, UnsupportedSettingError, lookup, spell
from deploy.profiles import PROFILES, load_profile
from deploy.servers_table import versions_cell
from service.settings import Settings, SettingsError, load_settings
from service.settings_types import HTTP_VERSIONS

README = Path(__file__).resolve().parents[2] / "README.md"
TLS = {"tls_cert_file": Path("/run/tls/tls.crt"), "tls_key_file": Path("/run/tls/tls.key")}
TRANSPORTS = {"cleartext": {}, "tls": TLS}
# Every set of versions valid on that transport (h2/h3 need TLS, h2c is cleartext).
VALID = {
    "cleartext": ("http/1.1", "h2c"),
    "tls": ("http/1.1", "h2", "h3"),
}
CASES = [
    (profile, transport, frozenset(versions))
    for profile in sorted(PROFILES)
    for transport, names in VALID.items()
    for size in range(1, len(names) + 1)
    for versions in combinations(names, size)
]


# What h3 needs besides TLS (deploy/hypercorn.py): one process, no supervisor.
ONE_PROCESS = {"workers": 1, "worker_timeout": 0}


def settings_for(transport: str, versions: frozenset[str] | None, **others: Any) -> Settings:
    asked: dict[str, Any] = {} if versions is None else {"http_versions": spell(versions)}
    if versions is not None and "h3" in versions:
        asked |= ONE_PROCESS
    return Settings(**TRANSPORTS[transport], **asked, **others)


@pytest.mark.parametrize(
    ("profile", "transport", "versions"), CASES, ids=[f"{p}-{t}-{spell(v)}" for p, t, v in CASES]
)
def test_a_declared_set_is_built_and_any_other_is_refused_in_one_line(
    profile: str, transport: str, versions: frozenset[str]
) -> None:
    server = load_profile(profile)
    settings = settings_for(transport, versions)
    choices = server.http.choices(transport == "tls")
    if versions in choices:
        server.check(settings)
        if server.http.key:
            assert lookup(server.build(settings).server, server.http.key) == choices[versions]
        return
    with pytest.raises(UnsupportedSettingError) as refused:
        server.check(settings)
    message = str(refused.value)
    assert "\n" not in message
    assert f"{profile} cannot honour APP_HTTP_VERSIONS={spell(versions)}: it serves exactly" in message
    assert server.http.why in message


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_unset_means_the_largest_set_the_profile_declares(profile: str, transport: str) -> None:
    http: HttpVersions = load_profile(profile).http
    every = http.every(transport == "tls")
    assert every in http.choices(transport == "tls"), f"{profile}: no declared set holds all the others"
    assert every == frozenset().union(*http.choices(transport == "tls")) - http.only_when_asked
    assert "h3" not in every  # h3 needs settings of its own (one process): only when asked
    assert http.served(settings_for(transport, None)) == every
    load_profile(profile).check(settings_for(transport, None))


def test_every_profile_serves_http1_on_both_transports() -> None:
    for profile in PROFILES:
        http = load_profile(profile).http
        assert "http/1.1" in http.every(tls=False) or "h2c" in http.every(tls=False)
        assert "http/1.1" in http.every(tls=True)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"APP_HTTP_VERSIONS": "h2"}, "APP_HTTP_VERSIONS=h2: h2 needs TLS"),
        ({"APP_HTTP_VERSIONS": "http/1.1,h3"}, "h3 needs TLS"),
        (
            {**{f"APP_{k.upper()}": str(v) for k, v in TLS.items()}, "APP_HTTP_VERSIONS": "h2c"},
            "h2c is cleartext",
        ),
        ({"APP_HTTP_VERSIONS": "h2,spdy"}, "'spdy' is not an HTTP version"),
        ({"APP_HTTP_VERSIONS": ""}, "must name at least one version"),
        ({"APP_TLS_CERT_FILE": "/c.pem"}, "APP_TLS_CERT_FILE needs APP_TLS_KEY_FILE"),
        ({"APP_TLS_KEY_FILE": "/k.pem"}, "APP_TLS_KEY_FILE needs APP_TLS_CERT_FILE"),
        ({"APP_TLS_CLIENT_CA_FILE": "/ca.pem"}, "APP_TLS_CLIENT_CA_FILE needs APP_TLS_CERT_FILE"),
        ({"APP_TLS_MIN_VERSION": "1.3"}, "APP_TLS_MIN_VERSION needs APP_TLS_CERT_FILE"),
        ({**{f"APP_{k.upper()}": str(v) for k, v in TLS.items()}, "APP_TLS_MIN_VERSION": "1.1"}, "allowed: "),
    ],
)
def test_settings_refuse_a_transport_they_cannot_have_in_one_line(
    env: dict[str, str], problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings(env_file=None, secrets_dir=None)
    assert "\n" not in str(refused.value)
    assert problem in str(refused.value)


def test_the_versions_are_the_settings_own() -> None:
    for profile in PROFILES:
        http = load_profile(profile).http
        for tls in (False, True):
            for versions in http.choices(tls):
                assert versions <= set(HTTP_VERSIONS)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_readme_server_table_says_what_each_profile_serves(profile: str) -> None:
    row = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{profile}` | "))
    assert row.split(" | ")[2] == versions_cell(load_profile(profile)), (
        f"README.md's HTTP versions of {profile} are stale: {versions_cell(load_profile(profile))}"
    )


H3 = frozenset({"http/1.1", "h2", "h3"})


@pytest.mark.parametrize(
    ("others", "problem"),
    [
        ({"workers": 2}, "h3 needs hypercorn in one process (APP_WORKERS=1, APP_WORKER_TIMEOUT=0"),
        ({"worker_timeout": 30}, "h3 needs hypercorn in one process"),
        ({"max_requests": 1000}, "h3 needs hypercorn in one process"),
        ({"max_worker_memory": 512}, "h3 needs hypercorn in one process"),
        ({"tls_client_ca_file": Path("/run/tls/ca.crt")}, "h3 with APP_TLS_CLIENT_CA_FILE"),
    ],
)
def test_h3_is_refused_where_hypercorn_cannot_serve_it_correctly(
    others: dict[str, Any], problem: str
) -> None:
    settings = Settings(**TLS, http_versions=spell(H3), **(ONE_PROCESS | others))
    with pytest.raises(UnsupportedSettingError) as refused:
        load_profile("hypercorn").check(settings)
    assert "\n" not in str(refused.value)
    assert f"hypercorn cannot honour APP_HTTP_VERSIONS=http/1.1,h2,h3: {problem}" in str(refused.value)


def test_h3_without_its_extra_is_refused_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aioquic" else real(name, *a)
    )
    with pytest.raises(UnsupportedSettingError) as refused:
        load_profile("hypercorn").check(settings_for("tls", H3))
    assert "h3 needs aioquic: install the project's `http3` extra" in str(refused.value)


def test_h3_binds_quic_on_the_tcp_address_only_when_asked() -> None:
    hypercorn = load_profile("hypercorn")
    asked = hypercorn.launch_config(settings_for("tls", H3, host="127.0.0.1", port=8443)).server
    assert asked["quic_bind"] == asked["bind"] == ["127.0.0.1:8443"]
    assert asked["workers"] == 0  # in process: the one process h3 needs
    assert hypercorn.launch_config(settings_for("tls", None)).server["quic_bind"] == []
