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
from urllib.parse import unquote

import annotated_types
from dotenv.parser import parse_stream
from pydantic import Field, HttpUrl, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
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
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


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
    otlp_headers: SecretStr | None = Field(
        default=None,
        description=(
            "Headers sent with every OTLP export: comma-separated `key=value` pairs, values "
            "percent-encoded where they hold a comma (e.g. `authorization=Bearer abc123`, the token a "
            "managed collector asks for). Secret: give it as the file `otlp_headers` "
            "(k8s/components/secret-settings) or a `secretKeyRef`, never in the ConfigMap. "
            "Needs APP_OTLP_ENDPOINT."
        ),
        json_schema_extra={"allowed": "comma-separated `key=value` pairs with HTTP header names as keys"},
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
    secrets_dir: Path = Field(
        default=DEFAULT_SECRETS_DIR,
        description=(
            "Directory of secret files, one per setting named like the field in lower case "
            "(`otlp_headers`); a file that is not a setting stops start-up. Read from the environment "
            "and `.env` only. Skipped when the default is absent; set explicitly, it must exist."
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

    @field_validator("metrics_dir", "drain_file", "secrets_dir")
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

    @field_validator("cors_allow_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item != "*" and not _ORIGIN.match(item):
                raise ValueError(f"{item!r} is not an origin like https://app.example.com")
        return value

    @field_validator("otlp_headers")
    @classmethod
    def _check_otlp_headers(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            otlp_header_map(value)
        return value

    @model_validator(mode="after")
    def _check_otlp_headers_have_an_endpoint(self) -> Settings:
        if self.otlp_headers is not None and self.otlp_endpoint is None:
            raise ValueError(
                "APP_OTLP_HEADERS needs APP_OTLP_ENDPOINT (without an endpoint nothing is exported)"
            )
        return self

    @model_validator(mode="after")
    def _check_jitter(self) -> Settings:
        if self.max_requests_jitter and not self.max_requests:
            raise ValueError(
                "APP_MAX_REQUESTS_JITTER needs APP_MAX_REQUESTS > 0 (jitter alone restarts nothing)"
            )
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
        if unsafe:
            raise ValueError(
                "production refuses development-only settings: "
                + "; ".join(unsafe)
                + " (set APP_ALLOW_UNSAFE_PRODUCTION=true to start anyway)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A Secret key is the field name (`otlp_headers`), not the variable: the prefix
        # separates this service's variables from the rest of the environment, and a
        # secrets directory holds nothing else.
        if isinstance(file_secret_settings, SecretsSettingsSource):
            file_secret_settings = SecretsSettingsSource(
                settings_cls,
                secrets_dir=file_secret_settings.secrets_dir,
                case_sensitive=False,
                env_prefix="",
            )
        return init_settings, env_settings, dotenv_settings, file_secret_settings

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


def otlp_header_map(headers: SecretStr) -> dict[str, str]:
    """`key=value,...` -> {header: value}, the OTEL_EXPORTER_OTLP_HEADERS convention.

    Names are lower-cased, values percent-decoded. Errors name a pair by its
    position and never quote it: any part of it may be the secret.
    """
    pairs: dict[str, str] = {}
    for position, item in enumerate(headers.get_secret_value().split(","), start=1):
        if not item.strip():
            continue
        name, separator, value = item.partition("=")
        name, value = unquote(name).strip().lower(), unquote(value).strip()
        if not separator or not _HEADER_NAME.match(name):
            raise ValueError(f"pair {position} is not `key=value` with an HTTP header name as key")
        if not value or any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ValueError(f"pair {position} has an empty value or one with control characters")
        if name in pairs:
            raise ValueError(f"pair {position} repeats a header name")
        pairs[name] = value
    if not pairs:
        raise ValueError("holds no `key=value` pair")
    return pairs


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


def field_name(variable: str) -> str:
    """The field an `APP_*` variable names (whether or not it exists)."""
    return variable[len(ENV_PREFIX) :].lower()


def load_settings(
    env_file: Path | None = DEFAULT_ENV_FILE,
    secrets_dir: Path | None = None,
    settings_class: type[Settings] = Settings,
    **overrides: Any,
) -> Settings:
    """Build `Settings`, turning every problem into one readable `SettingsError`.

    Every source is checked for names that are not settings before any value is
    read. `secrets_dir` stands for APP_SECRETS_DIR (tests pass their own).
    """
    env_file = env_file if env_file is not None and env_file.is_file() else None
    try:
        env_file_lines = _env_file_lines(env_file) if env_file is not None else []
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise SettingsError(f"cannot read {env_file}: {reason}") from None
    problems = _unknown_variables(os.environ, settings_class)
    if env_file is not None:
        problems += _unknown_env_file_keys(env_file, env_file_lines, settings_class)
    directory, explicit = _secrets_directory(secrets_dir, os.environ, env_file_lines)
    kwargs: dict[str, Any] = {"_env_file": env_file, "_secrets_dir": None}
    if secrets_dir is not None:
        overrides = {**overrides, "secrets_dir": secrets_dir}
    # A relative path is left to the field's own validation, which names it.
    if directory.is_absolute():
        if directory.is_dir():
            problems += _secret_file_problems(directory, settings_class)
            kwargs["_secrets_dir"] = directory
        elif explicit:
            problems.append(
                f"invalid {env_name('secrets_dir')}={str(directory)!r}: no such directory "
                "(allowed: an absolute path to a directory)"
            )
    if problems:
        raise SettingsError("\n".join(problems))
    try:
        return settings_class(**kwargs, **overrides)
    except ValidationError as error:
        raise SettingsError(_describe(error, settings_class, env_file)) from None


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


def is_secret(field: FieldInfo) -> bool:
    return _strip_optional(field.annotation) is SecretStr


def _not_a_setting(
    written: str, source: str, known: list[str], spellings: list[str], fallback: Iterable[str] = ()
) -> str:
    """The one line for a name no setting has: as written, where, and the nearest setting
    (else the nearest of `fallback`, the settings that source is most likely meant for)."""
    matches = [m for s in spellings for m in difflib.get_close_matches(s, known, n=1)]
    matches += [m for s in spellings for m in difflib.get_close_matches(s, list(fallback), n=1, cutoff=0)]
    suggestion = f"; did you mean {matches[0]}?" if matches else ""
    return f"{written} ({source}) is not a setting of this service{suggestion} (known: {', '.join(known)})"


def _variable_spellings(written: str) -> list[str]:
    upper = written.upper()
    # `PORT=` in `.env` most likely lost its prefix.
    return [upper] if upper.startswith(ENV_PREFIX) else [ENV_PREFIX + upper, upper]


def _unknown_variables(environ: Mapping[str, str], settings_class: type[Settings]) -> list[str]:
    known = sorted(env_name(name) for name in settings_class.model_fields)
    return [
        _not_a_setting(key, "environment variable", known, _variable_spellings(key))
        for key in sorted(environ)
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
    ]


def _env_file_lines(env_file: Path) -> list[tuple[int, str | None, str | None]]:
    """(line number, key, value) of every statement; key None for a line that does not parse."""
    with env_file.open(encoding="utf-8") as stream:
        return [
            (binding.original.line, binding.key, binding.value)
            for binding in parse_stream(stream)
            if binding.key is not None or binding.error
        ]


def _unknown_env_file_keys(
    env_file: Path, lines: list[tuple[int, str | None, str | None]], settings_class: type[Settings]
) -> list[str]:
    """The `.env` file belongs to this service: every key in it must be a setting."""
    known = sorted(env_name(name) for name in settings_class.model_fields)
    problems = []
    for number, key, _ in lines:
        source = f"{env_file} line {number}"
        if key is None:
            # Not quoted: the line may hold a secret.
            problems.append(f"{source} is not a `NAME=value` line")
        elif key.upper() not in known:
            problems.append(_not_a_setting(key, source, known, _variable_spellings(key)))
    return problems


def _secrets_directory(
    explicit: Path | None,
    environ: Mapping[str, str],
    env_file_lines: list[tuple[int, str | None, str | None]],
) -> tuple[Path, bool]:
    """The secrets directory, read ahead of the other settings since it is where some come
    from, and whether it was asked for (then it must exist) or is the default."""
    if explicit is not None:
        return explicit, True
    name = env_name("secrets_dir")
    from_environment = [value for key, value in environ.items() if key.upper() == name]
    from_env_file = [value for _, key, value in env_file_lines if key and key.upper() == name and value]
    chosen = [*from_environment, *reversed(from_env_file)]
    if chosen:
        return Path(chosen[0]), True
    return DEFAULT_SECRETS_DIR, False


def _secret_file_problems(directory: Path, settings_class: type[Settings]) -> list[str]:
    """Every file in the secrets directory must be a readable setting, as a Secret key typo
    would otherwise be ignored. A key is always a file (or a link to one); what the kubelet
    adds for itself, `..data` and the timestamped `..2026_...` folder it links to, are not."""
    known = sorted(name for name in settings_class.model_fields if name != "secrets_dir")
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        return [f"cannot read {env_name('secrets_dir')}={str(directory)!r}: {error.strerror}"]
    problems = []
    for entry in entries:
        if entry.is_dir():
            continue
        source = f"secret file {entry}"
        if entry.name.lower() == "secrets_dir":
            problems.append(
                f"{entry.name} ({source}) cannot set {env_name('secrets_dir')}: the directory "
                "is found before its files are read"
            )
        elif entry.name.lower() not in known:
            secret = [name for name in known if is_secret(settings_class.model_fields[name])]
            problems.append(_not_a_setting(entry.name, source, known, [entry.name.lower()], secret))
        else:
            problems += _unreadable(entry, source)
    return problems


def _unreadable(entry: Path, source: str) -> list[str]:
    """Why a secret file cannot be read as text, without quoting any of it."""
    try:
        entry.read_bytes().decode("utf-8")
    except OSError as error:
        return [f"{entry.name} ({source}) cannot be read: {error.strerror}"]
    except UnicodeDecodeError:
        return [f"{entry.name} ({source}) is not UTF-8 text"]
    return []


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
        if name in raw and not is_secret(field):
            shown = f"={raw[name]!r}"
        lines.append(f"invalid {env_name(name)}{shown}: {message} (allowed: {allowed_values(field)})")
    return "\n".join(lines)
