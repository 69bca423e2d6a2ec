"""One setting, its value in every server's launch config: the server's own part, or the project's."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop
from gunicorn.config import Config as GunicornConfig
from gunicorn.workers.gasgi import ASGIWorker
from hypercorn.config import Config as HypercornConfig
from uvicorn import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from deploy import config_view, hypercorn_internals
from deploy import gunicorn as gunicorn_adapter
from deploy import gunicorn_asgi as gunicorn_asgi_adapter
from deploy import hypercorn as hypercorn_adapter
from deploy import uvicorn as uvicorn_adapter
from deploy.gunicorn_internals import head_timeout_worker
from deploy.profile import (
    Declared,
    LaunchConfig,
    Native,
    Project,
    Refused,
    Support,
    UnsupportedSettingError,
    as_it_is,
    assemble,
    lookup,
)
from deploy.profiles import PROFILES, load_profile
from deploy.uvicorn_internals import HeadTimeoutHttpToolsProtocol
from deploy.worker_timing import KILL_BACKSTOP_SECONDS
from service.logs import log_config
from service.settings import Settings, env_name

VALUES: dict[str, Any] = {
    "host": "::1",
    "port": 9123,
    "workers": 3,
    "log_level": "warning",
    "access_log": False,
    "keepalive_timeout": 75,
    "request_head_timeout": 90,
    "graceful_timeout": 17,
    "max_requests": 1000,
    "max_requests_jitter": 50,
    "worker_timeout": 45,
    "max_worker_memory": 300,
    "forwarded_allow_ips": "10.0.0.0/8,127.0.0.1",
    "root_path": "/api",
    "asgi_app": "tests.support.apps:app",
}
SETTINGS = Settings(**VALUES)
# A server that cannot honour a setting refuses it at start-up, as its profile declares.
REFUSED_BY = {
    name: {field for field, support in load_profile(name).settings.items() if isinstance(support, Refused)}
    for name in PROFILES
}


def settings_for(profile: str) -> Settings:
    refused = REFUSED_BY.get(profile, set())
    return Settings(**{k: v for k, v in VALUES.items() if k not in refused})


# Every declared setting, perturbed on its own from a base where everything the servers take is
# set (TLS included): its declared key, read from the built config, changes; the value there is
# the declaration's (the setting's own when it converts nothing); no key another setting declares
# changes with it. The keys are read from the declarations, never written here a second time.
TLS_PAIR: dict[str, Any] = {
    "tls_cert_file": Path("/run/tls/tls.crt"),
    "tls_key_file": Path("/run/tls/tls.key"),
}
EVERYTHING: dict[str, Any] = {
    **VALUES,
    **TLS_PAIR,
    "tls_client_ca_file": Path("/run/tls/ca.crt"),
    "tls_min_version": "1.2",
    "log_format": "console",
    "ws_max_message_bytes": 65536,
    "ws_ping_interval": 10.0,
    "ws_ping_timeout": 5.0,
}
OTHER: dict[str, Any] = {
    "asgi_app": "service.main:app",
    "host": "127.0.0.1",
    "log_level": "error",
    "log_format": "json",
    "forwarded_allow_ips": "192.168.0.0/16",
    "tls_cert_file": Path("/run/tls/other.crt"),
    "tls_key_file": Path("/run/tls/other.key"),
    "tls_client_ca_file": Path("/run/tls/other-ca.crt"),
    "tls_min_version": "1.3",
}


def base_for(profile: str) -> dict[str, Any]:
    refused = REFUSED_BY.get(profile, set())
    return {k: v for k, v in EVERYTHING.items() if k not in refused}


def other_values(name: str, current: Any) -> list[Any]:
    """Values of the setting other than the base's: above and below for a number (the shorter of
    two settings a server folds into one timer is then the changed one at least once)."""
    if name in OTHER:
        return [OTHER[name]]
    assert isinstance(current, int | float), f"add another value of {name} to OTHER"
    return [current + 1, current / 2 if isinstance(current, float) else current // 2]


def leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a launch config at its dotted key: nested mappings and dataclasses descended."""
    if isinstance(config, Mapping):
        parts = config.items()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        parts = ((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))
    else:
        return {prefix.rstrip("."): config}
    return {key: value for name, part in parts for key, value in leaves(part, f"{prefix}{name}.").items()}


def within(changed: set[str], keys: set[str]) -> set[str]:
    """The changed leaves at one of `keys` or inside it."""
    return {leaf for leaf in changed for key in keys if leaf == key or leaf.startswith(f"{key}.")}


DECLARED = [
    (profile, name)
    for profile in PROFILES
    for name, support in load_profile(profile).settings.items()
    if isinstance(support, Declared)
]


@pytest.mark.parametrize(("profile", "name"), DECLARED, ids=[f"{p}-{n}" for p, n in DECLARED])
def test_a_setting_changes_its_declared_key_and_no_other_declared_one(profile: str, name: str) -> None:
    server = load_profile(profile)
    support = server.settings[name]
    assert isinstance(support, Declared)
    base = base_for(profile)
    before = leaves(server.launch_config(Settings(**base)))
    # Keys other settings declare with a value of their own setting alone: nothing else moves them.
    theirs = {
        other.at
        for other_name, other in server.settings.items()
        if isinstance(other, Declared)
        and other_name != name
        and other.derive is None
        and other.at != support.at
    }
    moved = False
    for value in other_values(name, base[name]):
        settings = Settings(**{**base, name: value})
        launch = server.launch_config(settings)
        changed = {key for key, leaf in leaves(launch).items() if before.get(key, leaf) != leaf}
        moved = moved or bool(within(changed, {support.at}))
        assert lookup(launch, support.at) == support.value(settings, name)
        if support.derive is None and support.convert is as_it_is:
            assert lookup(launch, support.at) == getattr(settings, name), (
                f"{support.at} is not the setting's value"
            )
        assert not within(changed, theirs), (
            f"{env_name(name)} moves what others declare: {within(changed, theirs)}"
        )
    assert moved, f"{profile} declares {env_name(name)} at {support.at}, which it never changes"


# What the translating declarations make of SETTINGS, in the settings' words: (profile, setting) -> value.
TRANSLATED: dict[tuple[str, str], Any] = {
    ("hypercorn", "host"): ["[::1]:9123"],
    ("gunicorn", "port"): ["[::1]:9123"],
    ("gunicorn-asgi", "host"): ["[::1]:9123"],
    ("hypercorn", "workers"): 3,
    ("hypercorn", "log_level"): "WARNING",
    ("granian", "log_level"): "warning",
    ("hypercorn", "keepalive_timeout"): 75,  # the shorter of keep-alive and the head deadline
    ("hypercorn", "request_head_timeout"): 75,
    ("granian", "request_head_timeout"): 90_000,  # milliseconds
    ("uvicorn", "max_requests"): 1000,
    ("uvicorn", "forwarded_allow_ips"): "10.0.0.0/8,127.0.0.1",
    ("gunicorn", "graceful_timeout"): 17,
    ("granian", "max_worker_memory"): 300,
}


@pytest.mark.parametrize(
    ("profile", "name"), sorted(TRANSLATED), ids=[f"{p}-{n}" for p, n in sorted(TRANSLATED)]
)
def test_a_translated_setting_reaches_its_key_as_the_server_takes_it(profile: str, name: str) -> None:
    server = load_profile(profile)
    support = server.settings[name]
    assert isinstance(support, Native)
    assert lookup(server.launch_config(settings_for(profile)), support.at) == TRANSLATED[profile, name]


# 0 turns a limit off in the settings; None does in these servers' configs.
OFF_IS_NONE = [("uvicorn", "max_requests"), ("hypercorn", "max_requests"), ("granian", "max_worker_memory")]


@pytest.mark.parametrize(("profile", "name"), OFF_IS_NONE, ids=[f"{p}-{n}" for p, n in OFF_IS_NONE])
def test_off_is_the_servers_off(profile: str, name: str) -> None:
    server = load_profile(profile)
    support = server.settings[name]
    assert isinstance(support, Native)
    assert lookup(server.launch_config(Settings(**{name: 0})), support.at) is None


def test_each_key_has_one_definition() -> None:
    # An extra (what no setting drives) never replaces a declared key, nested or not; settings that
    # share a key (host and port in one bind address) must give it one value.
    declared: dict[str, Support] = {
        "workers": Native("workers"),
        "port": Native("part.port"),
        "worker_timeout": Project("worker_timeout"),
    }
    launch = assemble(Settings(), declared, extras={"part": {"other": 1}}, project={"supervisor": True})
    assert launch.server == {"workers": Settings().workers, "part": {"port": Settings().port, "other": 1}}
    assert (launch.project.worker_timeout, launch.project.supervisor) == (Settings().worker_timeout, True)
    for extras in ({"workers": 5}, {"part": {"port": 1}}):
        with pytest.raises(ValueError, match="define it once"):
            assemble(Settings(), declared, extras=extras)
    with pytest.raises(ValueError, match="define it once"):
        assemble(Settings(), declared, extras={}, project={"worker_timeout": 1})
    with pytest.raises(ValueError, match="APP_PORT sets `workers`"):
        assemble(Settings(), {"workers": Native("workers"), "port": Native("workers")}, extras={})


REFUSALS = [
    (profile, name)
    for profile in PROFILES
    for name, support in load_profile(profile).settings.items()
    if isinstance(support, Refused)
]


@pytest.mark.parametrize(("profile", "name"), REFUSALS, ids=[f"{p}-{n}" for p, n in REFUSALS])
def test_a_refused_setting_is_refused_as_declared(profile: str, name: str) -> None:
    server = load_profile(profile)
    # Jitter is only valid together with max_requests, which is what gets refused then.
    needed = {"max_requests_jitter": "max_requests", "ws_ping_timeout": "ws_ping_interval"}.get(name, name)
    refused = needed if isinstance(server.settings.get(needed), Refused) else name
    only_this = Settings(**{name: EVERYTHING[name], needed: EVERYTHING[needed]})
    with pytest.raises(UnsupportedSettingError, match=f"{profile} cannot honour {env_name(refused)}"):
        server.launch_config(only_this)


# --- the servers' fast paths (regressions here cost 2x throughput or 44 ms per request) ---


def test_uvicorn_fast_path_is_pinned() -> None:
    native = load_profile("uvicorn").launch_config(SETTINGS).server
    worker = load_profile("gunicorn").launch_config(SETTINGS).server["uvicorn_worker"]
    for config in (native, worker):
        assert config["loop"] == "uvloop"
        assert issubclass(config["http"], HttpToolsProtocol)  # httptools, with a head deadline
    config = uvicorn_adapter.build_config(SETTINGS)
    config.load()
    assert config.http_protocol_class is HeadTimeoutHttpToolsProtocol
    assert config.get_loop_factory() is not None


def test_request_head_timeout_reaches_every_server() -> None:
    settings = Settings(request_head_timeout=7)
    assert uvicorn_adapter.build_config(settings).request_head_timeout == 7  # type: ignore[attr-defined]
    assert gunicorn_adapter.application(settings).project.request_head_timeout == 7
    granian_native = load_profile("granian").launch_config(settings).server
    assert granian_native["http1_settings"].header_read_timeout == 7000
    assert gunicorn_asgi_adapter.application(settings).project.request_head_timeout == 7


def test_gunicorn_asgi_runs_our_subclass_of_gunicorns_asgi_worker() -> None:
    # gunicorn's own `-k asgi` worker, plus the request-head deadline it lacks.
    settings = Settings(request_head_timeout=7)
    native = load_profile("gunicorn-asgi").launch_config(settings).server["gunicorn"]
    assert (native["asgi_loop"], native["asgi_lifespan"]) == ("uvloop", "on")
    application = gunicorn_asgi_adapter.application(settings)
    worker_class = application.cfg.worker_class
    assert worker_class is head_timeout_worker()
    assert issubclass(worker_class, ASGIWorker)
    worker = worker_class(0, 0, [], application, 30, application.cfg, None)
    worker.tmp.close()
    assert worker.request_head_timeout == 7


def test_granian_uses_uvloop_and_the_asgi_interface_with_lifespan() -> None:
    native = load_profile("granian").launch_config(settings_for("granian")).server
    assert (native["loop"], native["interface"]) == ("uvloop", "asgi")


def test_hypercorn_uses_the_uvloop_worker_class() -> None:
    assert hypercorn_adapter.build_config(SETTINGS).worker_class == "uvloop"


def test_hypercorn_event_loop_is_named_by_the_worker_class_in_one_place() -> None:
    config = hypercorn_adapter.build_config(SETTINGS)
    assert hypercorn_adapter.event_loop_factory(config) is uvloop.new_event_loop
    # A supervised worker's loop keeps its listeners (hypercorn_internals.ACCEPT_SETTLE).
    assert hypercorn_adapter.event_loop_factory(config, supervised=True) is hypercorn_internals.worker_loop
    config.worker_class = "asyncio"
    assert hypercorn_adapter.event_loop_factory(config) is None
    assert hypercorn_adapter.event_loop_factory(config, supervised=True) is None


# --- the servers' own environment fallbacks never win ---


def test_gunicorn_ignores_its_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "9")
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 7 --bind 0.0.0.0:1")
    cfg: GunicornConfig = gunicorn_adapter.application(SETTINGS).cfg
    assert cfg.workers == 3
    assert cfg.bind == ["[::1]:9123"]
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]
    assert cfg.graceful_timeout == 17 + KILL_BACKSTOP_SECONDS
    assert cfg.worker_class_str == gunicorn_adapter.WORKER_CLASS


def test_uvicorn_ignores_forwarded_allow_ips_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    monkeypatch.setenv("WEB_CONCURRENCY", "9")
    config = uvicorn_adapter.build_config(SETTINGS)
    assert isinstance(config, UvicornConfig)
    assert config.forwarded_allow_ips == "10.0.0.0/8,127.0.0.1"
    assert config.proxy_headers is False
    assert config.workers == 3


def test_our_defaults_replace_the_servers_defaults() -> None:
    defaults = Settings()
    uvicorn_native = load_profile("uvicorn").launch_config(defaults).server
    hypercorn_config = hypercorn_adapter.build_config(defaults)
    gunicorn_native = load_profile("gunicorn").launch_config(defaults).server
    # servers differ: graceful none/3 s/30 s, keep-alive 5 s/5 s/2 s
    assert HypercornConfig().graceful_timeout == 3.0
    assert uvicorn_native["timeout_graceful_shutdown"] == defaults.graceful_timeout
    assert hypercorn_config.graceful_timeout == defaults.graceful_timeout
    assert gunicorn_native["uvicorn_worker"]["timeout_graceful_shutdown"] == defaults.graceful_timeout
    assert uvicorn_native["timeout_keep_alive"] == defaults.keepalive_timeout
    assert hypercorn_config.keep_alive_timeout == defaults.keepalive_timeout
    assert gunicorn_native["gunicorn"]["keepalive"] == defaults.keepalive_timeout


def test_hypercorn_one_idle_timer_honours_both_keepalive_and_head_timeouts() -> None:
    # hypercorn's keep-alive timer also runs until a request head is complete (silent or
    # trickling connections are cut by it): it gets the shorter of the two deadlines.
    head_first = Settings(keepalive_timeout=30, request_head_timeout=4)
    assert hypercorn_adapter.build_config(head_first).keep_alive_timeout == 4
    keepalive_first = Settings(keepalive_timeout=5, request_head_timeout=10)
    assert hypercorn_adapter.build_config(keepalive_first).keep_alive_timeout == 5


SERVER_ACCESS_LOG_KEY = {
    "uvicorn": ("access_log", False),
    "hypercorn": ("accesslog", None),
    "gunicorn": ("gunicorn.accesslog", None),
    "gunicorn-asgi": ("gunicorn.accesslog", None),
    "granian": ("log_access", False),
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("log_format", ["json", "console"])
def test_every_server_gets_the_one_log_config(profile: str, log_format: str) -> None:
    settings = Settings(log_format=log_format, log_level="debug")  # type: ignore[arg-type]
    server = load_profile(profile)
    declared = server.settings["log_format"]
    assert isinstance(declared, Native)
    assert lookup(server.launch_config(settings), declared.at) == log_config(settings, server.loggers)
    assert set(PROFILES) == set(SERVER_ACCESS_LOG_KEY)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_server_access_logs_are_off_the_app_writes_them(profile: str) -> None:
    path, off = SERVER_ACCESS_LOG_KEY[profile]
    assert lookup(load_profile(profile).launch_config(Settings(access_log=True)).server, path) == off


def test_app_applied_settings_are_neutral_in_every_server() -> None:
    # Proxy headers and root path are applied once, in the app (service/app.py).
    uvicorn_native = load_profile("uvicorn").launch_config(SETTINGS).server
    assert (uvicorn_native["proxy_headers"], uvicorn_native["root_path"]) == (False, "")
    assert hypercorn_adapter.launch_config(SETTINGS).server["root_path"] == ""
    worker = gunicorn_adapter.application(SETTINGS).worker_overrides
    assert worker["proxy_headers"] is False
    assert load_profile("granian").launch_config(settings_for("granian")).server["url_path_prefix"] is None
    gunicorn_asgi = load_profile("gunicorn-asgi").launch_config(SETTINGS).server["gunicorn"]
    assert (gunicorn_asgi["root_path"], gunicorn_asgi["secure_scheme_headers"]) == ("", {})


def test_one_unwatched_worker_without_recycling_runs_in_process() -> None:
    single = Settings(workers=1, worker_timeout=0)
    assert hypercorn_adapter.launch_config(single).server["workers"] == 0
    assert uvicorn_adapter.launch_config(single).project.supervisor is False
    for supervised in (
        Settings(workers=1, worker_timeout=0, max_requests=100),
        Settings(workers=1),  # the default APP_WORKER_TIMEOUT watches the worker
        Settings(workers=1, worker_timeout=0, max_worker_memory=200),
    ):
        assert hypercorn_adapter.launch_config(supervised).server["workers"] == 1
        assert uvicorn_adapter.launch_config(supervised).project.supervisor is True
    assert uvicorn_adapter.launch_config(Settings(workers=2, worker_timeout=0)).project.supervisor is True


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_serve_is_handed_the_launch_config_that_is_shown(profile: str) -> None:
    # One path from the settings to what runs: `run` builds once and hands exactly that to `serve`,
    # the object `python -m deploy config --full` prints.
    handed: list[LaunchConfig] = []
    server = dataclasses.replace(load_profile(profile), serve=lambda launch: handed.append(launch) or 0)
    settings = settings_for(profile)
    assert server.run(settings) == 0
    assert handed == [server.launch_config(settings)]
    assert json.loads(config_view.full(server, settings))["server"] == json.loads(
        json.dumps(handed[0].document()["server"], default=str)
    )
