"""The one place that reads the environment.

Every runtime knob of the service and of every server profile is a field of
`Settings`: environment variables prefixed `APP_`, an optional `.env` file and
Kubernetes secret files (one file per field under `/run/secrets`). Each field
carries its description and its validation; the README's settings table and the
launcher's error messages are generated from them.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import Field, HttpUrl, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    SettingsConfigDict,
)

from service.cpu import available_cpus

ENV_PREFIX = "APP_"
DEFAULT_ENV_FILE = Path(".env")
DEFAULT_SECRETS_DIR = Path("/run/secrets")
DEFAULT_DRAIN_SECONDS = 5

Environment = Literal["development", "production"]
ServerName = Literal["uvicorn", "hypercorn", "gunicorn", "gunicorn-asgi", "granian"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["json", "console"]

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# Dotted names on both sides of the colon: what pkgutil.resolve_name (gunicorn's loader here)
# and every server's own importer accept alike.
_IMPORT_STRING = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
_ROOT_PATH = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$")


class Settings(BaseSettings):
    """Runtime configuration of the service and of the server that runs it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        validate_default=True,
    )

    env: Environment = Field(
        default="development",
        description="Deployment environment. `production` turns the API docs off by default.",
    )
    server: ServerName = Field(
        default="uvicorn",
        description="Server profile `python -m deploy` starts when no profile is named.",
    )
    asgi_app: str = Field(
        default="service.main:app",
        description="Import string `module:attribute` of the ASGI app the server loads.",
        json_schema_extra={"allowed": "an import string `module:attribute`"},
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address to bind. The container image sets `0.0.0.0`.",
        json_schema_extra={"allowed": "an IPv4/IPv6 address or a host name"},
    )
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to bind.")
    workers: int = Field(
        default_factory=available_cpus,
        ge=1,
        le=256,
        description=(
            "Worker processes. Default: the CPUs this process may use "
            "(CPU affinity and cgroup v1/v2 CPU quota, rounded up), not the host's core count."
        ),
    )
    log_level: LogLevel = Field(default="info", description="Minimum level of server and app logs.")
    access_log: bool = Field(
        default=True,
        description="Log one line per request (written by the app, the same fields on every server).",
    )
    access_log_skip_paths: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("/healthz", "/readyz", "/metrics"),
        description="Comma-separated paths left out of the access log (probes and scrapes by default).",
        json_schema_extra={"allowed": "comma-separated paths starting with `/`, or empty"},
    )
    log_format: LogFormat | None = Field(
        default=None,
        description=(
            "`json` (one object per line) or `console`. Default: json in production, console in development."
        ),
    )
    keepalive_timeout: int = Field(
        default=5,
        ge=1,
        le=3600,
        description=(
            "Seconds an idle keep-alive connection stays open. Behind a load balancer, set it "
            "above the balancer's idle timeout, so the server never closes a connection the "
            "balancer is about to reuse."
        ),
    )
    request_head_timeout: int = Field(
        default=10,
        ge=1,
        le=3600,
        description=(
            "Seconds a client gets to send a complete request line and headers, on a new "
            "connection or after a response; slower (or silent) clients are disconnected."
        ),
    )
    graceful_timeout: int = Field(
        default=20,
        ge=1,
        le=3600,
        description=(
            "Seconds in-flight requests get to finish after SIGTERM/SIGINT before they are cut "
            "and the server exits."
        ),
    )
    max_requests: int = Field(
        default=0,
        ge=0,
        description=(
            "Requests after which a worker is replaced (0 = never); where the profile can, it serves on "
            "until its replacement is ready. Bounds slow leaks."
        ),
    )
    max_requests_jitter: int = Field(
        default=0,
        ge=0,
        description="Random extra requests (0..N) added per worker so workers do not restart together.",
    )
    forwarded_allow_ips: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("127.0.0.1", "::1"),
        description=(
            "Comma-separated IPs/CIDRs of proxies whose `X-Forwarded-For`/`-Proto` headers are "
            "trusted, or `*` for any."
        ),
        json_schema_extra={"allowed": "comma-separated IP addresses or CIDR networks, or `*`"},
    )
    root_path: str = Field(
        default="",
        description=(
            "Path prefix under which a proxy exposes the app (e.g. `/api`); "
            "the app serves both with and without it."
        ),
        json_schema_extra={"allowed": "empty, or a path like `/api` (no trailing slash)"},
    )
    docs_enabled: bool | None = Field(
        default=None,
        description="Serve `/docs` and `/openapi.json`. Default: on in development, off in production.",
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("*",),
        description=(
            "Comma-separated Host header values served (`*.example.com` for subdomains), or `*`. "
            "Others get 400. The probes are exempt: the kubelet sends the pod IP as Host."
        ),
        json_schema_extra={"allowed": "comma-separated host names, `*.domain` patterns, or `*`"},
    )
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Comma-separated origins allowed by CORS (e.g. `https://app.example.com`). Empty: CORS off."
        ),
        json_schema_extra={"allowed": "comma-separated `scheme://host[:port]` origins, or empty"},
    )
    allow_unsafe_production: bool = Field(
        default=False,
        description=(
            "Let production start with development-only settings (API docs on a public bind, debug "
            "logs, `*` in APP_FORWARDED_ALLOW_IPS or APP_CORS_ALLOW_ORIGINS). Off: such a start is refused."
        ),
    )
    metrics_enabled: bool = Field(
        default=True,
        description="Serve Prometheus metrics at `/metrics`, summed over all workers.",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description=(
            "Directory for the per-worker metric files (Prometheus multiprocess mode); emptied at "
            "start. Default: a fresh temporary directory per launch. In Kubernetes: an emptyDir."
        ),
        json_schema_extra={"allowed": "an absolute path"},
    )
    metrics_allow_ips: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
        description=(
            "Comma-separated IPs/CIDRs allowed to read `/metrics` (after trusted-proxy "
            "resolution), or `*`. Default: loopback and private networks, where scrapers live."
        ),
        json_schema_extra={"allowed": "comma-separated IP addresses or CIDR networks, or `*`"},
    )
    otlp_endpoint: HttpUrl | None = Field(
        default=None,
        description=(
            "OTLP/HTTP traces endpoint, e.g. `http://otel-collector:4318/v1/traces`. Unset: tracing "
            "is off and the OpenTelemetry SDK is not even imported."
        ),
        json_schema_extra={"allowed": "an http(s) URL"},
    )
    otel_service_name: str = Field(
        default="asgi-deploy",
        min_length=1,
        max_length=128,
        description="`service.name` of the exported spans.",
        json_schema_extra={"allowed": "a non-empty string"},
    )
    drain_seconds: int | None = Field(
        default=None,
        ge=0,
        le=300,
        description=(
            "Seconds between SIGTERM and the graceful stop during which /readyz answers 503 and every "
            "response carries `Connection: close`, while new connections are still served, so "
            "keep-alive clients move off without losing a request. Default: 0 in Kubernetes (the "
            "preStop sleep does this job), 5 elsewhere."
        ),
    )
    drain_file: Path | None = Field(
        default=None,
        description=(
            "File whose appearance starts the drain in every worker. Managed by the launcher; "
            "create it yourself to drain without stopping."
        ),
        json_schema_extra={"allowed": "an absolute path"},
    )
    max_body_size: int = Field(
        default=1_048_576,
        ge=1,
        le=1_073_741_824,
        description=(
            "Largest request body in bytes. A larger one, declared by Content-Length or streamed, "
            "is answered 413 without being read into memory."
        ),
    )
    max_header_bytes: int = Field(
        default=32_768,
        ge=1024,
        le=1_048_576,
        description="Largest total size of a request's header names and values in bytes; beyond it, 431.",
    )
    max_header_count: int = Field(
        default=100,
        ge=10,
        le=10_000,
        description="Most header fields a request may carry; beyond it, 431.",
    )
    max_concurrency: int = Field(
        default=512,
        ge=0,
        le=1_000_000,
        description=(
            "Requests one worker handles at once; beyond it the worker answers 503 at once "
            "instead of queueing without bound (0 = no limit)."
        ),
    )

    reload: bool = Field(
        default=False,
        description=(
            "Development loop: restart the server when a `.py` file of the app or `.env` changes "
            "(polling, so it works in containers too); a syntax error is reported and the last good "
            "code keeps serving. Same on every profile; refused in production. `make dev` sets it."
        ),
    )
    ws_max_message_bytes: int = Field(
        default=1_048_576,
        ge=125,
        le=67_108_864,
        description=(
            "Largest WebSocket message in bytes (after reassembling its frames); a larger one closes "
            "the connection with 1009."
        ),
    )
    ws_max_connections: int = Field(
        default=1000,
        ge=0,
        le=1_000_000,
        description=(
            "Open WebSockets one worker holds at most; beyond it upgrades get 503 with `Retry-After` "
            "(0 = no limit)."
        ),
    )
    ws_ping_interval: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description=(
            "Seconds between the server's pings on an idle WebSocket, so dead peers are found; unset: "
            "no pings. uvicorn, gunicorn (uvicorn workers) and hypercorn only."
        ),
    )
    ws_ping_timeout: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description=(
            "Seconds a peer gets to answer a ping before the WebSocket is closed (1011); needs "
            "APP_WS_PING_INTERVAL. uvicorn and gunicorn (uvicorn workers) only."
        ),
    )
    ws_allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Comma-separated origins a browser may open a WebSocket from, or `*` for any. Empty: only "
            "the service's own origin (Origin matching Host). Others get 403 before the upgrade "
            "(cross-site WebSocket hijacking). Clients that send no Origin (not browsers) are let in."
        ),
        json_schema_extra={"allowed": "comma-separated `scheme://host[:port]` origins, `*`, or empty"},
    )

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError("not an IP address or host name") from None
        return value

    @field_validator("asgi_app")
    @classmethod
    def _check_import_string(cls, value: str) -> str:
        if not _IMPORT_STRING.match(value):
            raise ValueError("not an import string of the form `module:attribute`")
        return value

    @field_validator(
        "access_log_skip_paths",
        "allowed_hosts",
        "cors_allow_origins",
        "forwarded_allow_ips",
        "metrics_allow_ips",
        "ws_allowed_origins",
        mode="before",
    )
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        """Comma-separated text from the environment -> tuple (NoDecode fields)."""
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("access_log_skip_paths")
    @classmethod
    def _check_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not item.startswith("/"):
                raise ValueError(f"{item!r} does not start with `/`")
        return value

    @field_validator("forwarded_allow_ips", "metrics_allow_ips")
    @classmethod
    def _check_ip_list(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one address, or `*`")
        for item in value:
            if item == "*":
                continue
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
            if "/" in item and network.network_address != ipaddress.ip_interface(item).ip:
                # gunicorn refuses it at start-up, and which network was meant is a guess.
                raise ValueError(f"{item!r} has host bits set (the network is {network})")
        if "*" in value and len(value) > 1:
            raise ValueError("`*` cannot be combined with addresses")
        return value

    @field_validator("metrics_dir", "drain_file")
    @classmethod
    def _check_absolute_path(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @field_validator("root_path")
    @classmethod
    def _check_root_path(cls, value: str) -> str:
        if value.endswith("/") or not _ROOT_PATH.match(value):
            raise ValueError("must be empty or start with `/`, without a trailing `/`")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one host, or `*`")
        for item in value:
            if item != "*" and not _HOSTNAME.match(item.removeprefix("*.")):
                try:
                    ipaddress.ip_address(item)
                except ValueError:
                    raise ValueError(f"{item!r} is not a host name, `*.domain` or `*`") from None
        return value

    @field_validator("cors_allow_origins", "ws_allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item != "*" and not _ORIGIN.match(item):
                raise ValueError(f"{item!r} is not an origin like https://app.example.com")
        return value

    @model_validator(mode="after")
    def _check_jitter(self) -> Settings:
        if self.max_requests_jitter and not self.max_requests:
            raise ValueError(
                "APP_MAX_REQUESTS_JITTER needs APP_MAX_REQUESTS > 0 (jitter alone restarts nothing)"
            )
        return self

    @model_validator(mode="after")
    def _refuse_reload_in_production(self) -> Settings:
        if self.reload and self.env == "production":
            raise ValueError("APP_RELOAD=true is a development loop; production refuses it (unset it)")
        return self

    @model_validator(mode="after")
    def _check_ping(self) -> Settings:
        if self.ws_ping_timeout is not None and self.ws_ping_interval is None:
            raise ValueError("APP_WS_PING_TIMEOUT needs APP_WS_PING_INTERVAL (no ping, nothing to time out)")
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env != "production" or self.allow_unsafe_production:
            return self
        unsafe = []
        if self.docs_on and not _is_loopback(self.host):
            unsafe.append(f"APP_DOCS_ENABLED=true with the public bind APP_HOST={self.host}")
        if self.log_level == "debug":
            unsafe.append("APP_LOG_LEVEL=debug")
        if "*" in self.forwarded_allow_ips:
            unsafe.append("APP_FORWARDED_ALLOW_IPS=* (any client could fake its address and scheme)")
        if "*" in self.cors_allow_origins:
            unsafe.append("APP_CORS_ALLOW_ORIGINS=*")
        if "*" in self.ws_allowed_origins:
            unsafe.append("APP_WS_ALLOWED_ORIGINS=* (any site could open a WebSocket with a user's cookies)")
        if unsafe:
            raise ValueError(
                "production refuses development-only settings: "
                + "; ".join(unsafe)
                + " (set APP_ALLOW_UNSAFE_PRODUCTION=true to start anyway)"
            )
        return self

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.env == "production" else "console"

    @property
    def effective_drain_seconds(self) -> int:
        if self.drain_seconds is not None:
            return self.drain_seconds
        return 0 if running_in_kubernetes() else DEFAULT_DRAIN_SECONDS

    @property
    def docs_on(self) -> bool:
        if self.docs_enabled is not None:
            return self.docs_enabled
        return self.env == "development"

    def public_dump(self) -> dict[str, Any]:
        """Effective values for display, secrets masked."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown[name] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, tuple):
                shown[name] = ",".join(value)
            elif isinstance(value, Path | HttpUrl):
                shown[name] = str(value)
            else:
                shown[name] = value
        shown["docs_on"] = self.docs_on
        shown["effective_log_format"] = self.effective_log_format
        shown["effective_drain_seconds"] = self.effective_drain_seconds
        return shown


def running_in_kubernetes() -> bool:
    """The kubelet sets this in every container, whatever enableServiceLinks says."""
    return "KUBERNETES_SERVICE_HOST" in os.environ


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(Exception):
    """Invalid configuration; `str()` is a message fit for a human, without a traceback."""


def env_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


def load_settings(
    env_file: Path | None = DEFAULT_ENV_FILE,
    secrets_dir: Path | None = DEFAULT_SECRETS_DIR,
    settings_class: type[Settings] = Settings,
    **overrides: Any,
) -> Settings:
    """Build `Settings`, turning every problem into one readable `SettingsError`."""
    unknown = _unknown_variables(os.environ, settings_class)
    if unknown:
        raise SettingsError("\n".join(unknown))
    kwargs: dict[str, Any] = {
        "_env_file": env_file if env_file is not None and env_file.is_file() else None,
        "_secrets_dir": secrets_dir if secrets_dir is not None and secrets_dir.is_dir() else None,
    }
    try:
        return settings_class(**kwargs, **overrides)
    except ValidationError as error:
        raise SettingsError(_describe(error, settings_class, kwargs["_env_file"])) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the real environment."""
    return load_settings()


# --- human-readable errors -------------------------------------------------


def allowed_values(field: FieldInfo) -> str:
    """What a field accepts, in words: used by error messages and the README table."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    annotation = _strip_optional(field.annotation)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation is SecretStr:
        return "a secret string"
    if annotation is int:
        low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
        high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        if low is not None:
            return f"an integer >= {low}"
        return "an integer"
    return "a string"


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_secret(field: FieldInfo) -> bool:
    return _strip_optional(field.annotation) is SecretStr


def _unknown_variables(environ: Mapping[str, str], settings_class: type[Settings]) -> list[str]:
    known = {env_name(name) for name in settings_class.model_fields}
    problems = []
    for key in sorted(environ):
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            hint = difflib.get_close_matches(upper, sorted(known), n=1)
            suggestion = f"; did you mean {hint[0]}?" if hint else ""
            problems.append(
                f"{key} is not a setting of this service{suggestion} (known: {', '.join(sorted(known))})"
            )
    return problems


def _raw_values(settings_class: type[Settings], env_file: Path | None) -> dict[str, object]:
    """The unvalidated values the settings sources saw, to quote them back."""
    raw: dict[str, object] = {}
    sources: Iterable[Any] = (
        DotEnvSettingsSource(settings_class, env_file=env_file) if env_file else None,
        EnvSettingsSource(settings_class),
    )
    for source in sources:
        if source is None:
            continue
        try:
            raw.update(source())
        except Exception:  # noqa: S112 - quoting the input is best effort
            continue
    return raw


def _describe(
    error: ValidationError,
    settings_class: type[Settings],
    env_file: Path | None,
) -> str:
    raw = _raw_values(settings_class, env_file)
    lines = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        message = item["msg"].removeprefix("Value error, ")
        if not loc:
            lines.append(f"invalid settings: {message}")
            continue
        name = str(loc[0])
        field = settings_class.model_fields.get(name)
        if field is None:
            lines.append(f"{env_name(name)} is not a setting of this service")
            continue
        shown = ""
        if name in raw and not _is_secret(field):
            shown = f"={raw[name]!r}"
        lines.append(f"invalid {env_name(name)}{shown}: {message} (allowed: {allowed_values(field)})")
    return "\n".join(lines)
