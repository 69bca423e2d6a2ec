"""One setting, its value in every server's native configuration."""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.workers.gasgi import ASGIWorker
from hypercorn.config import Config as HypercornConfig
from uvicorn import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from deploy import gunicorn as gunicorn_adapter
from deploy import gunicorn_asgi as gunicorn_asgi_adapter
from deploy import hypercorn as hypercorn_adapter
from deploy import uvicorn as uvicorn_adapter
from deploy.gunicorn_internals import head_timeout_worker
from deploy.profile import Refused, UnsupportedSettingError, lookup
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
REFUSED = object()
REFUSED_BY = {
    name: {field for field, support in load_profile(name).settings.items() if isinstance(support, Refused)}
    for name in PROFILES
}


def settings_for(profile: str) -> Settings:
    refused = REFUSED_BY.get(profile, set())
    return Settings(**{k: v for k, v in VALUES.items() if k not in refused})


# setting -> {profile: (path in native config, expected value)}
TABLE: dict[str, dict[str, tuple[str, Any]]] = {
    "asgi_app": {
        "uvicorn": ("app", "tests.support.apps:app"),
        "hypercorn": ("application_path", "tests.support.apps:app"),
        "gunicorn": ("app", "tests.support.apps:app"),  # resolved by GunicornApplication.load
        "granian": ("target", "tests.support.apps:app"),
        "gunicorn-asgi": ("app", "tests.support.apps:app"),
    },
    "host+port": {
        "uvicorn": ("host", "::1"),
        "hypercorn": ("bind", ["[::1]:9123"]),
        "gunicorn": ("gunicorn.bind", ["[::1]:9123"]),
        "granian": ("address", "::1"),
        "gunicorn-asgi": ("gunicorn.bind", ["[::1]:9123"]),
    },
    "workers": {
        "uvicorn": ("workers", 3),
        "hypercorn": ("workers", 3),
        "gunicorn": ("gunicorn.workers", 3),
        "granian": ("workers", 3),
        "gunicorn-asgi": ("gunicorn.workers", 3),
    },
    "log_level": {
        "uvicorn": ("log_level", "warning"),
        "hypercorn": ("loglevel", "WARNING"),
        "gunicorn": ("gunicorn.loglevel", "warning"),
        "granian": ("log_level", "warning"),
        "gunicorn-asgi": ("gunicorn.loglevel", "warning"),
    },
    "keepalive_timeout": {
        "uvicorn": ("timeout_keep_alive", 75),
        "hypercorn": ("keep_alive_timeout", 75),
        "gunicorn": ("gunicorn.keepalive", 75),
        "gunicorn-asgi": ("gunicorn.keepalive", 75),
        "granian": ("", REFUSED),
    },
    "graceful_timeout": {
        "uvicorn": ("timeout_graceful_shutdown", 17),
        "hypercorn": ("graceful_timeout", 17),
        "gunicorn": ("uvicorn_worker.timeout_graceful_shutdown", 17),
        "granian": ("workers_kill_timeout", 17),
        "gunicorn-asgi": ("gunicorn.graceful_timeout", 17),
    },
    "max_requests": {
        "uvicorn": ("limit_max_requests", 1000),
        "hypercorn": ("max_requests", 1000),
        "gunicorn": ("gunicorn.max_requests", 1000),
        "gunicorn-asgi": ("gunicorn.max_requests", 1000),
        "granian": ("", REFUSED),
    },
    # Our supervisor (uvicorn, hypercorn), gunicorn's heartbeat and our arbiter, granian's own
    # RSS limit and deploy/heartbeat_files.py: tests/resilience/test_worker_health.py proves them.
    "worker_timeout": {
        "uvicorn": ("supervisor.worker_timeout", 45),
        "hypercorn": ("supervisor.worker_timeout", 45),
        "gunicorn": ("gunicorn.timeout", 45),
        "gunicorn-asgi": ("gunicorn.timeout", 45),
        "granian": ("worker_timeout", 45),
    },
    "max_worker_memory": {
        "uvicorn": ("supervisor.max_memory_mib", 300),
        "hypercorn": ("supervisor.max_memory_mib", 300),
        "gunicorn": ("worker_memory.max_mib", 300),
        "gunicorn-asgi": ("worker_memory.max_mib", 300),
        "granian": ("workers_max_rss", 300),
    },
    "max_requests_jitter": {
        "uvicorn": ("limit_max_requests_jitter", 50),
        "hypercorn": ("max_requests_jitter", 50),
        "gunicorn": ("gunicorn.max_requests_jitter", 50),
        "gunicorn-asgi": ("gunicorn.max_requests_jitter", 50),
        "granian": ("", REFUSED),
    },
}


CASES = [(setting, profile) for setting, row in TABLE.items() for profile in row]


@pytest.mark.parametrize(("setting", "profile"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_setting_reaches_native_config(setting: str, profile: str) -> None:
    path, expected = TABLE[setting][profile]
    server = load_profile(profile)
    if expected is REFUSED:
        # Jitter is only valid together with max_requests, which is what gets refused then.
        needed = {"max_requests_jitter": "max_requests"}.get(setting, setting)
        only_this = Settings(**{setting: VALUES[setting], needed: VALUES[needed]})
        with pytest.raises(UnsupportedSettingError, match=f"{profile} cannot honour {env_name(needed)}"):
            server.native_config(only_this)
        return
    assert lookup(server.native_config(settings_for(profile)), path) == expected


def test_table_covers_every_profile() -> None:
    for setting, row in TABLE.items():
        assert set(row) == set(PROFILES), setting


# --- the servers' fast paths (regressions here cost 2x throughput or 44 ms per request) ---


def test_uvicorn_fast_path_is_pinned() -> None:
    native = load_profile("uvicorn").native_config(SETTINGS)
    worker = load_profile("gunicorn").native_config(SETTINGS)["uvicorn_worker"]
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
    assert gunicorn_adapter.worker_overrides(settings)["request_head_timeout"] == 7
    granian_native = load_profile("granian").native_config(settings)
    assert granian_native["http1_settings"].header_read_timeout == 7000
    assert gunicorn_asgi_adapter.worker_overrides(settings)["request_head_timeout"] == 7


def test_gunicorn_asgi_runs_our_subclass_of_gunicorns_asgi_worker() -> None:
    # gunicorn's own `-k asgi` worker, plus the request-head deadline it lacks.
    settings = Settings(request_head_timeout=7)
    native = load_profile("gunicorn-asgi").native_config(settings)["gunicorn"]
    assert (native["asgi_loop"], native["asgi_lifespan"]) == ("uvloop", "on")
    application = gunicorn_asgi_adapter.application(settings)
    worker_class = application.cfg.worker_class
    assert worker_class is head_timeout_worker()
    assert issubclass(worker_class, ASGIWorker)
    worker = worker_class(0, 0, [], application, 30, application.cfg, None)
    worker.tmp.close()
    assert worker.request_head_timeout == 7


def test_granian_uses_uvloop_and_the_asgi_interface_with_lifespan() -> None:
    native = load_profile("granian").native_config(settings_for("granian"))
    assert (native["loop"], native["interface"]) == ("uvloop", "asgi")


def test_hypercorn_uses_the_uvloop_worker_class() -> None:
    assert hypercorn_adapter.build_config(SETTINGS).worker_class == "uvloop"


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
    uvicorn_native = load_profile("uvicorn").native_config(defaults)
    hypercorn_config = hypercorn_adapter.build_config(defaults)
    gunicorn_native = load_profile("gunicorn").native_config(defaults)
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


LOG_CONFIG_KEY = {
    "uvicorn": "log_config",
    "hypercorn": "logconfig_dict",
    "gunicorn": "gunicorn.logconfig_dict",
    "gunicorn-asgi": "gunicorn.logconfig_dict",
    "granian": "log_dictconfig",
}
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
    native = load_profile(profile).native_config(settings)
    assert lookup(native, LOG_CONFIG_KEY[profile]) == log_config(settings, load_profile(profile).loggers)
    assert set(PROFILES) == set(LOG_CONFIG_KEY) == set(SERVER_ACCESS_LOG_KEY)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_server_access_logs_are_off_the_app_writes_them(profile: str) -> None:
    path, off = SERVER_ACCESS_LOG_KEY[profile]
    assert lookup(load_profile(profile).native_config(Settings(access_log=True)), path) == off


def test_app_applied_settings_are_neutral_in_every_server() -> None:
    # Proxy headers and root path are applied once, in the app (service/app.py).
    uvicorn_native = load_profile("uvicorn").native_config(SETTINGS)
    assert (uvicorn_native["proxy_headers"], uvicorn_native["root_path"]) == (False, "")
    assert hypercorn_adapter.native_config(SETTINGS)["root_path"] == ""
    worker = gunicorn_adapter.worker_overrides(SETTINGS)
    assert worker["proxy_headers"] is False
    assert load_profile("granian").native_config(settings_for("granian"))["url_path_prefix"] is None
    gunicorn_asgi = load_profile("gunicorn-asgi").native_config(SETTINGS)["gunicorn"]
    assert (gunicorn_asgi["root_path"], gunicorn_asgi["secure_scheme_headers"]) == ("", {})


def test_one_unwatched_worker_without_recycling_runs_in_process() -> None:
    single = Settings(workers=1, worker_timeout=0)
    assert hypercorn_adapter.native_config(single)["workers"] == 0
    for supervised in (
        Settings(workers=1, worker_timeout=0, max_requests=100),
        Settings(workers=1),  # the default APP_WORKER_TIMEOUT watches the worker
        Settings(workers=1, worker_timeout=0, max_worker_memory=200),
    ):
        assert hypercorn_adapter.native_config(supervised)["workers"] == 1
