"""APP_HTTP_VERSIONS against each profile's `http` table (deploy/profile.py `HttpVersions`).

Table-driven: every set a profile declares, in cleartext and over TLS, lands as its native
value at the declared key; every other set of versions is refused in one line; unset means
the largest set. The smoke test (tests/smoke/test_tls.py) checks the versions on the wire.
"""

from __future__ import annotations

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


def settings_for(transport: str, versions: frozenset[str] | None) -> Settings:
    asked: dict[str, Any] = {} if versions is None else {"http_versions": spell(versions)}
    return Settings(**TRANSPORTS[transport], **asked)


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
