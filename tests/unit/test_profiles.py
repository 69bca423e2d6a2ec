"""Each profile's declaration (deploy/profile.py) against what its launch config really does.

For every setting and every profile: change the setting alone and see whether the
complete launch config (the server's own part and the project's) changes. It must
change exactly where the profile declares the setting (`Native` or `Project`), and
nowhere for a setting it does not declare (which the app or the launcher honours
alike). A `Refused` setting is refused at start-up in one line that names it.
"""

from __future__ import annotations

import types
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
import pytest
from pydantic import SecretStr

from deploy import servers_table
from deploy.plan import with_profile
from deploy.profile import ALIKE, Declared, LaunchConfig, Refused, UnsupportedSettingError, lookup
from deploy.profiles import PROFILES, load_profile
from service.settings import Settings, env_name

DOCS = Path(__file__).resolve().parents[2] / "docs" / "servers.md"

# Every setting is changed from BASE alone; log_format is fixed so that `env` changes only itself.
BASE: dict[str, Any] = {"log_format": "console", "max_requests": 100}
# Values for the fields whose type says too little to pick another valid one.
OTHER_VALUE: dict[str, Any] = {
    "asgi_app": "tests.support.apps:app",
    "host": "::1",
    "root_path": "/api",
    "forwarded_allow_ips": ("10.0.0.0/8",),
    "metrics_allow_ips": ("10.0.0.0/8",),
    "allowed_hosts": ("svc.example.com",),
    "cors_allow_origins": ("https://app.example.com",),
    "access_log_skip_paths": ("/skip",),
    "metrics_dir": Path("/run/asgi-deploy/metrics"),
    "drain_file": Path("/run/asgi-deploy/draining"),
    "otlp_endpoint": "http://127.0.0.1:4318/v1/traces",
    "otel_service_name": "another-name",
    "otlp_headers": "authorization=Bearer another",
    "secrets_dir": Path("/run/other-secrets"),
    "ws_allowed_origins": ("https://app.example.com",),
    "ws_ping_interval": 10.0,
    "ws_ping_timeout": 5.0,
    "broker_url": "redis://127.0.0.1:6379/0",
    "broker_password": "another-password",
    "tls_cert_file": Path("/run/tls/tls.crt"),
    "tls_key_file": Path("/run/tls/tls.key"),
    "tls_client_ca_file": Path("/run/tls/ca.crt"),
    "quotes_url": "http://127.0.0.1:8080/",
}
TLS_PAIR = {"tls_cert_file": OTHER_VALUE["tls_cert_file"], "tls_key_file": OTHER_VALUE["tls_key_file"]}
# Settings valid only together with another one.
NEEDS: dict[str, dict[str, Any]] = {
    "otlp_headers": {"otlp_endpoint": OTHER_VALUE["otlp_endpoint"]},
    "ws_ping_timeout": {"ws_ping_interval": OTHER_VALUE["ws_ping_interval"]},
    "broker_password": {"broker_url": OTHER_VALUE["broker_url"]},
    "tls_cert_file": {"tls_key_file": OTHER_VALUE["tls_key_file"]},
    "tls_key_file": {"tls_cert_file": OTHER_VALUE["tls_cert_file"]},
    "tls_client_ca_file": TLS_PAIR,
    "tls_min_version": TLS_PAIR,
}
# Declared by each profile's `http` table, not its settings map: tests/unit/test_http_versions.py.
DECLARED_APART = {"http_versions"}
SELECTS_THE_PROFILE = {"server"}


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def other_values(name: str) -> list[Any]:
    """Valid values of the field other than the one BASE gives it: above and below, where it has both."""
    if name in OTHER_VALUE:
        return [OTHER_VALUE[name]]
    field = Settings.model_fields[name]
    current = getattr(Settings(**BASE), name)
    if name in SELECTS_THE_PROFILE:
        return [profile for profile in PROFILES if profile != current]
    annotation = _unwrap(field.annotation)
    if annotation is bool:
        return [not current]
    if get_origin(annotation) is Literal:
        return [choice for choice in get_args(annotation) if choice != current]
    if annotation is SecretStr:
        return ["another-secret"]
    if annotation is int:
        low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), 0)
        high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
        start = low if current is None else current
        values = {low} if current is None else set()
        candidates = (start + 1, low)
        values |= {v for v in candidates if v != current and (high is None or v <= high)}
        return sorted(values)
    raise AssertionError(f"add a value for {name} to OTHER_VALUE")


def changed(name: str) -> list[Settings]:
    return [Settings(**{**BASE, **NEEDS.get(name, {}), name: value}) for value in other_values(name)]


CASES = [
    (profile, name) for profile in PROFILES for name in Settings.model_fields if name not in DECLARED_APART
]


@pytest.mark.parametrize(("profile", "name"), CASES, ids=[f"{p}-{n}" for p, n in CASES])
def test_the_launch_config_changes_exactly_where_the_profile_says(profile: str, name: str) -> None:
    server = load_profile(profile)
    support = server.settings.get(name)
    before = server.build(Settings(**BASE))
    variants = changed(name)
    assert variants, f"no other value of {env_name(name)} to try"
    if isinstance(support, Refused):
        # Refused unless the value changes nothing; a value it accepts leaves the config as it was.
        for settings in variants:
            if support.accepts(getattr(settings, name)):
                assert server.build(settings) == before, f"{profile} accepts {env_name(name)}, yet it changes"
            else:
                with pytest.raises(UnsupportedSettingError):
                    server.check(settings)
        return
    if name in SELECTS_THE_PROFILE:
        # APP_SERVER chooses the profile; whatever it says, a profile builds with its own name.
        chosen = [server.build(with_profile(settings, profile)) for settings in variants]
        assert all(config == server.build(with_profile(Settings(**BASE), profile)) for config in chosen)
        assert support is None
        return
    afters = [server.build(settings) for settings in variants]
    if isinstance(support, Declared):
        assert any(lookup(before, support.at) != lookup(after, support.at) for after in afters), (
            f"{profile} declares {env_name(name)} at {support.at}, which it does not change"
        )
    else:
        # Honoured alike by the app or the launcher: what the server and the project run stays.
        assert support is None
        assert all(but_the_launchers(before) == but_the_launchers(after) for after in afters), (
            f"{env_name(name)} changes {profile}'s launch config: declare it"
        )


def but_the_launchers(launch: LaunchConfig) -> LaunchConfig:
    """The launch config but for what the launcher resolves for every profile alike (the metrics
    directory each server's workers share)."""
    return replace(launch, project=replace(launch.project, metrics_dir=None))


REFUSALS = [
    (profile, name)
    for profile in PROFILES
    for name, support in load_profile(profile).settings.items()
    if isinstance(support, Refused)
]


@pytest.mark.parametrize(("profile", "name"), REFUSALS, ids=[f"{p}-{n}" for p, n in REFUSALS])
def test_a_refused_setting_stops_start_up_in_one_line(profile: str, name: str) -> None:
    server = load_profile(profile)
    support = server.settings[name]
    assert isinstance(support, Refused)
    settings = next(s for s in changed(name) if not support.accepts(getattr(s, name)))
    with pytest.raises(UnsupportedSettingError) as refused:
        server.check(settings)
    message = str(refused.value)
    assert "\n" not in message
    assert f"{profile} cannot honour {env_name(name)}" in message
    with pytest.raises(UnsupportedSettingError):
        server.run(settings)  # refused before anything runs, whoever calls it


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_defaults_are_never_refused(profile: str) -> None:
    load_profile(profile).check(Settings())


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_declared_key_exists_in_the_launch_config(profile: str) -> None:
    server = load_profile(profile)
    launch = server.build(Settings())
    for name, support in server.settings.items():
        assert name in Settings.model_fields, f"{profile} declares {name}, which is not a setting"
        if isinstance(support, Declared):
            lookup(launch, support.at)  # raises if the key is not there


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_support_names_every_setting(profile: str) -> None:
    support = load_profile(profile).support()
    assert list(support) == list(Settings.model_fields)
    assert all(text for text in support.values())


def test_the_profile_names_match_their_declarations() -> None:
    assert all(load_profile(name).name == name for name in PROFILES)


def test_docs_servers_page_is_current() -> None:
    assert DOCS.read_text() == servers_table.render(), "docs/servers.md is stale: run `make docs`"


def test_docs_servers_page_names_every_refusal_and_the_rest() -> None:
    page = servers_table.render()
    for profile, name in REFUSALS:
        support = load_profile(profile).settings[name]
        assert isinstance(support, Refused)
        assert support.why in page
    assert ALIKE in page
