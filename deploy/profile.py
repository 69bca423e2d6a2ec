"""What a server profile is: a declaration of what it does with each setting, plus its config and run.

Each `deploy/<server>.py` ends with one `PROFILE`. Its `settings` map names every
setting the server itself takes part in: honoured natively (`Native`: where in the
server's own config, and how it is translated), honoured by the project beside that
server (`Project`: which field of the project's part) or refused (`Refused`: why). A
setting it does not name is honoured identically on every server by the app or the
launcher. The declaration is code: `assemble` builds the one `LaunchConfig` a profile
runs from it, so each key is written once, in its declaration. The launcher's refusals,
`python -m deploy config`,
the adapter tests, the Kubernetes consistency check and docs/servers.md all read this
declaration, and nothing else knows which server supports what.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

from deploy.carried import CarriedPatch
from service.logs import NO_SERVER, ServerLoggers
from service.settings import Settings, env_name
from service.settings_types import HTTP_VERSIONS


def lookup(config: Any, key: str) -> Any:
    """The value at a dotted `key` of a config (a LaunchConfig): dots descend into mappings and attributes."""
    value: Any = config
    for part in key.split("."):
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


class UnsupportedSettingError(Exception):
    """A setting this server cannot honour; refused rather than silently ignored."""


def _never(_: Any) -> bool:
    return False


def as_it_is(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Declared:
    """A setting honoured at `key` of one part of the launch config, with the value `convert` makes
    of the setting's, or `derive` makes of the settings when others shape it too (several settings
    may share one such key)."""

    part: ClassVar[str]  # the LaunchConfig field the key is in
    key: str
    how: str = ""  # the translation in words, when the value is not passed on as it is
    convert: Callable[[Any], Any] = as_it_is
    derive: Callable[[Settings], Any] | None = None

    def value(self, settings: Settings, name: str) -> Any:
        """The value of setting `name` (this declaration's) under `settings`."""
        if self.derive is not None:
            return self.derive(settings)
        return self.convert(getattr(settings, name))

    @property
    def at(self) -> str:
        """Where the value is in a LaunchConfig (`lookup(launch, declared.at)`)."""
        return f"{self.part}.{self.key}"

    def within(self, part: str, how: str | None = None) -> Self:
        """The same declaration for a nested part of another config (a worker's, say)."""
        return replace(self, key=f"{part}.{self.key}", how=self.how if how is None else how)

    def _how(self) -> str:
        return f" ({self.how})" if self.how else ""


@dataclass(frozen=True)
class Native(Declared):
    """Honoured by the server itself at `key` of its own config (dots descend into nested parts)."""

    part: ClassVar[str] = "server"

    def describe(self) -> str:
        return f"`{self.key}`{self._how()}"


@dataclass(frozen=True)
class Project(Declared):
    """Honoured by the project beside the server (a supervisor, a hook, a carried patch): at `key`,
    a field of the launch's ProjectPart, never handed to the server."""

    part: ClassVar[str] = "project"

    def describe(self) -> str:
        return f"the project's `{self.key}`{self._how()}"


@dataclass(frozen=True)
class Refused:
    """Refused at start-up when set explicitly, unless `accepts` the value (one that changes nothing)."""

    why: str
    accepts: Callable[[Any], bool] = field(default=_never)

    def refuses(self, settings: Settings, name: str) -> bool:
        return name in settings.model_fields_set and not self.accepts(getattr(settings, name))

    def describe(self) -> str:
        return f"refused: {self.why}"


Support = Native | Project | Refused

# Settings no profile declares: what every server does with them alike.
ALIKE = "the app or the launcher, alike on every server"
# The proxy headers are applied by the app (service/forwarded.py) on every server.
# The WebSocket ping settings a server without pings of its own refuses.
NO_PINGS = "sends no WebSocket pings of its own; unset it"
NO_PING_TIMEOUT = "sends no WebSocket ping timeout of its own; unset it"
INERT_PROXY_LIST = "set so the server's env fallback cannot differ; inert, the app applies the headers"


VersionSet = frozenset[str]


def no_limits(settings: Settings, versions: VersionSet) -> str | None:
    return None


def spell(versions: VersionSet) -> str:
    """A set of HTTP versions as APP_HTTP_VERSIONS writes it, in the setting's own order."""
    return ",".join(v for v in HTTP_VERSIONS if v in versions)


@dataclass(frozen=True)
class HttpVersions:
    """The HTTP versions a server serves: every set it can serve exactly, in cleartext and over
    TLS, each with the native value that selects it (at `key`). Unset, APP_HTTP_VERSIONS means the
    largest set without the versions served `only_when_asked`; any set not listed is refused with
    `why`, and a listed one that other settings rule out with what `limits` says."""

    key: str  # where the build puts the chosen value ("" when there is nothing to choose)
    cleartext: Mapping[VersionSet, Any]
    tls: Mapping[VersionSet, Any]
    why: str  # what the server cannot serve, and why
    only_when_asked: VersionSet = frozenset()  # never in the default: they need more than the server
    limits: Callable[[Settings, VersionSet], str | None] = no_limits  # why other settings rule a set out

    def choices(self, tls: bool) -> Mapping[VersionSet, Any]:
        return self.tls if tls else self.cleartext

    def every(self, tls: bool) -> VersionSet:
        """What it serves when APP_HTTP_VERSIONS is unset."""
        return frozenset().union(*self.choices(tls)) - self.only_when_asked

    def served(self, settings: Settings) -> VersionSet:
        if settings.http_versions is None:
            return self.every(settings.tls_enabled)
        return frozenset(settings.http_versions)

    def native(self, settings: Settings) -> Any:
        """The native value for the versions the settings ask for (refused first if not served)."""
        return self.choices(settings.tls_enabled)[self.served(settings)]

    def refusal(self, settings: Settings) -> str | None:
        choices = self.choices(settings.tls_enabled)
        if self.served(settings) in choices:
            return self.limits(settings, self.served(settings))
        transport = "over TLS" if settings.tls_enabled else "in cleartext"
        served = " or ".join(f"exactly {spell(versions)}" for versions in choices)
        return f"it serves {served} {transport}: {self.why}"

    def describe(self) -> str:
        def sets(tls: bool) -> str:
            return " or ".join(f"`{spell(v)}`" for v in self.choices(tls))

        where = f"`{self.key}`" if self.key else "nothing to choose"
        return f"{where}; cleartext: {sets(False)}; TLS: {sets(True)} ({self.why})"


def none_if_zero(value: Any) -> Any:
    """0 (off, in the setting's words) as None (off, in the server's)."""
    return value or None


def comma_separated(values: Any) -> str:
    return ",".join(values)


def _place(config: dict[str, Any], key: str, value: Any, what: str) -> None:
    *parts, last = key.split(".")
    for part in parts:
        config = config.setdefault(part, {})
    if last in config and config[last] != value:
        raise ValueError(f"{what} sets `{key}`, which another declaration sets to another value")
    config[last] = value


def _merge(config: dict[str, Any], extras: Mapping[str, Any], prefix: str = "") -> None:
    for key, value in extras.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            _merge(config[key], value, f"{prefix}{key}.")
        elif key in config:
            raise ValueError(f"the extra `{prefix}{key}` is a declared key: define it once, in its Native")
        else:
            config[key] = value


@dataclass(frozen=True)
class ProjectPart:
    """The project's part of a launch: what it runs beside the server, never handed to the server.
    A field stays None on a server where it is not the project's (the server's own, or nothing)."""

    metrics_dir: Path | None = None  # the workers' metrics: a dead worker's gauges are dropped
    supervisor: bool | None = None  # deploy/supervisor.py runs the workers (uvicorn; hypercorn: workers > 0)
    worker_timeout: float | None = None  # hung workers: deploy/supervisor.py or deploy/heartbeat_files.py
    max_worker_memory: int | None = None  # MiB: deploy/supervisor.py or each gunicorn worker's own watch
    request_head_timeout: float | None = None  # the head deadline of a carried protocol patch


@dataclass(frozen=True)
class LaunchConfig:
    """What runs: the server's own config, handed to it as it is, and the project's part beside it.
    A profile's `serve` runs exactly this, and `python -m deploy config --full` prints it."""

    server: Mapping[str, Any]
    project: ProjectPart

    def document(self) -> dict[str, Any]:
        return {"server": dict(self.server), "project": asdict(self.project)}


def assemble(
    settings: Settings,
    *declarations: Mapping[str, Support],
    extras: Mapping[str, Any],
    http: HttpVersions | None = None,
    project: Mapping[str, Any] | None = None,
) -> LaunchConfig:
    """A complete launch config. The server's: each `Native` declaration's value at its key (dots
    nest mappings), `http`'s choice at its key, plus `extras`: what no setting drives, or what a
    setting drives beside its declared key. An extra never replaces a declared key: each has one
    definition. The project's: each `Project` declaration's value at its field, the metrics
    directory every profile's workers share, plus `project`'s extra fields."""
    server: dict[str, Any] = {}
    ours: dict[str, Any] = {"metrics_dir": settings.metrics_dir}
    for declared in declarations:
        for name, support in declared.items():
            if isinstance(support, Native):
                _place(server, support.key, support.value(settings, name), env_name(name))
            elif isinstance(support, Project):
                _place(ours, support.key, support.value(settings, name), env_name(name))
    if http is not None and http.key:
        _place(server, http.key, http.native(settings), env_name("http_versions"))
    _merge(server, extras)
    _merge(ours, project or {})
    return LaunchConfig(server=server, project=ProjectPart(**ours))


HTTP1_ONLY = {frozenset({"http/1.1"}): None}
HTTP1_SERVER = HttpVersions(key="", cleartext=HTTP1_ONLY, tls=HTTP1_ONLY, why="declared HTTP/1.1 only")


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str  # one line for the docs: what runs the app
    settings: Mapping[str, Support]
    build: Callable[[Settings], LaunchConfig]  # the complete config, workers' part included
    serve: Callable[[LaunchConfig], int]  # runs exactly that in this process until the server stops
    http: HttpVersions = HTTP1_SERVER  # the HTTP versions it can serve (APP_HTTP_VERSIONS)
    carried: tuple[CarriedPatch, ...] = ()  # its patches of the server's internals (deploy/carried.py)
    loggers: ServerLoggers = NO_SERVER  # where the server logs: configured by service/logs.py

    def refusals(self, settings: Settings) -> list[str]:
        refused = [
            f"{self.name} cannot honour {env_name(name)}: {support.why}"
            for name, support in self.settings.items()
            if isinstance(support, Refused) and support.refuses(settings, name)
        ]
        versions = self.http.refusal(settings)
        if versions is not None:
            asked = spell(self.http.served(settings))
            refused.append(f"{self.name} cannot honour {env_name('http_versions')}={asked}: {versions}")
        for patch in self.carried:
            if patch.in_range():
                continue
            refused += [
                f"{self.name} cannot honour {env_name(name)} with {patch.distribution} "
                f"{patch.installed() or '(not installed)'}: it needs {patch.module}, tested on "
                f"{patch.distribution}{patch.tested}"
                for name in patch.settings
                if name in settings.model_fields_set
                and getattr(settings, name) != Settings.model_fields[name].default
            ]
        return refused

    def check(self, settings: Settings) -> None:
        """Refuse, in one line, every setting this server cannot honour."""
        refusals = self.refusals(settings)
        if refusals:
            raise UnsupportedSettingError("; ".join(refusals))

    def launch_config(self, settings: Settings) -> LaunchConfig:
        """What runs under `settings`, once every setting it cannot honour has been refused."""
        self.check(settings)
        return self.build(settings)

    def run(self, settings: Settings) -> int:
        return self.serve(self.launch_config(settings))

    def support(self) -> dict[str, str]:
        """Every setting and what this server does with it, in words (`python -m deploy config`)."""
        return {
            name: self.settings[name].describe()
            if name in self.settings
            else self.http.describe()
            if name == "http_versions"
            else ALIKE
            for name in Settings.model_fields
        }
