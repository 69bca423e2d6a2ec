"""The one place that reads the environment: the registry of every setting.

Every runtime knob of the service and of every server profile is a field of
`Settings`: environment variables prefixed `APP_`, an optional `.env` file and
Kubernetes secret files (one file per field under `/run/secrets`). Each field
carries its description and its validation (shared shapes: service/settings_types.py);
the README's settings table and the launcher's error messages are generated from
them (service/settings_problems.py). Adding a setting means adding one field here.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, HttpUrl, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from deploy.profiles import PROFILES
from service.cpu import available_cpus
from service.settings_problems import (
    DEFAULT_SECRETS_DIR,
    ENV_PREFIX,
    SettingsError,
    allowed_values,
    describe,
    env_file_lines,
    env_name,
    field_name,
    is_secret,
    secret_file_problems,
    secrets_directory,
    unknown_env_file_keys,
    unknown_variables,
)
from service.settings_types import (
    HTTP_VERSIONS,
    AbsolutePath,
    BrokerUrl,
    Host,
    HostList,
    HttpVersionList,
    ImportString,
    NetworkList,
    OriginList,
    OtlpHeaders,
    PathList,
    RootPath,
    allowed,
    one_of,
)

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "SettingsError",
    "allowed_values",
    "env_name",
    "field_name",
    "get_settings",
    "is_secret",
    "load_settings",
]

DEFAULT_ENV_FILE = Path(".env")
DEFAULT_DRAIN_SECONDS = 5

Environment = Literal["development", "production"]
# The profiles' one list (deploy/profiles.py): a server added there is a valid APP_SERVER.
ServerName = Annotated[str, AfterValidator(one_of(PROFILES)), allowed(f"one of {', '.join(PROFILES)}")]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["json", "console"]
TlsVersion = Literal["1.2", "1.3"]
# The versions that need TLS, and the one that is cleartext only.
OVER_TLS_ONLY = ("h2", "h3")
CLEARTEXT_ONLY = ("h2c",)


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
    asgi_app: ImportString = Field(
        default="service.main:app",
        description="Import string `module:attribute` of the ASGI app the server loads.",
    )
    host: Host = Field(
        default="127.0.0.1", description="Address to bind. The container image sets `0.0.0.0`."
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
    access_log_skip_paths: PathList = Field(
        default=("/healthz", "/readyz", "/metrics"),
        description="Comma-separated paths left out of the access log (probes and scrapes by default).",
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
    worker_timeout: int = Field(
        default=30,
        ge=0,
        le=3600,
        description=(
            "Seconds a worker's event loop may go without progress (a blocking call in an `async def`, "
            "a deadlock, a stopped process) before the worker is killed and replaced (0 = never)."
        ),
    )
    max_worker_memory: int = Field(
        default=0,
        ge=0,
        le=1_048_576,
        description=(
            "Resident memory in MiB above which a worker is replaced (how often each server checks: "
            "docs/servers.md), "
            "recycled like APP_MAX_REQUESTS without losing a request (0 = no limit)."
        ),
    )
    forwarded_allow_ips: NetworkList = Field(
        default=("127.0.0.1", "::1"),
        description=(
            "Comma-separated IPs/CIDRs of proxies whose `X-Forwarded-For`/`-Proto` headers are "
            "trusted, or `*` for any."
        ),
    )
    root_path: RootPath = Field(
        default="",
        description=(
            "Path prefix under which a proxy exposes the app (e.g. `/api`); "
            "the app serves both with and without it."
        ),
    )
    docs_enabled: bool | None = Field(
        default=None,
        description="Serve `/docs` and `/openapi.json`. Default: on in development, off in production.",
    )
    allowed_hosts: HostList = Field(
        default=("*",),
        description=(
            "Comma-separated Host header values served (`*.example.com` for subdomains), or `*`. "
            "Others get 400. The probes are exempt: the kubelet sends the pod IP as Host."
        ),
    )
    cors_allow_origins: OriginList = Field(
        default=(),
        description=(
            "Comma-separated origins allowed by CORS (e.g. `https://app.example.com`). Empty: CORS off."
        ),
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
    metrics_dir: AbsolutePath | None = Field(
        default=None,
        description=(
            "Directory for the per-worker metric files (Prometheus multiprocess mode); emptied at "
            "start. Default: a fresh temporary directory per launch. In Kubernetes: an emptyDir."
        ),
        json_schema_extra={"allowed": "an absolute path"},
    )
    metrics_allow_ips: NetworkList = Field(
        default=("127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
        description=(
            "Comma-separated IPs/CIDRs allowed to read `/metrics` (after trusted-proxy "
            "resolution), or `*`. Default: loopback and private networks, where scrapers live."
        ),
    )
    otlp_endpoint: HttpUrl | None = Field(
        default=None,
        description=(
            "OTLP/HTTP traces endpoint, e.g. `http://otel-collector:4318/v1/traces`. Unset: tracing "
            "is off and the OpenTelemetry SDK is not even imported."
        ),
        json_schema_extra={"allowed": "an http(s) URL"},
    )
    otlp_headers: OtlpHeaders | None = Field(
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
    drain_file: AbsolutePath | None = Field(
        default=None,
        description=(
            "File whose appearance starts the drain in every worker. Managed by the launcher; "
            "create it yourself to drain without stopping."
        ),
        json_schema_extra={"allowed": "an absolute path"},
    )
    secrets_dir: AbsolutePath = Field(
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

    tls_cert_file: Path | None = Field(
        default=None,
        description=(
            "PEM certificate (its chain after it) the server presents: with APP_TLS_KEY_FILE the "
            "service serves HTTPS only. Checked at start-up: readable, valid now, matching the key. "
            "Watched: a new pair that passes the same checks is served by replacing the workers with "
            "overlap, without a restart (docs/production.md)."
        ),
        json_schema_extra={"allowed": "a path to a PEM certificate file"},
    )
    tls_key_file: Path | None = Field(
        default=None,
        description=(
            "PEM private key of APP_TLS_CERT_FILE, unencrypted (mount it from a Secret; its content is "
            "never logged). Both or neither."
        ),
        json_schema_extra={"allowed": "a path to an unencrypted PEM private key file"},
    )
    tls_client_ca_file: Path | None = Field(
        default=None,
        description=(
            "Mutual TLS: PEM certificates of the CA(s) client certificates must be signed by; a client "
            "without such a certificate fails the handshake. Needs APP_TLS_CERT_FILE."
        ),
        json_schema_extra={"allowed": "a path to a PEM file of CA certificates"},
    )
    tls_min_version: TlsVersion = Field(
        default="1.2",
        description="Oldest TLS version a client may negotiate. Needs APP_TLS_CERT_FILE.",
    )
    http_versions: HttpVersionList | None = Field(
        default=None,
        description=(
            "HTTP versions to serve: `http/1.1`, `h2` (HTTP/2 over TLS, by ALPN), `h2c` (cleartext HTTP/2 "
            "with prior knowledge), `h3`. Unset: every version the profile serves with the TLS settings "
            "given (docs/servers.md); a profile refuses a set it cannot serve exactly."
        ),
        json_schema_extra={"allowed": f"comma-separated, from {', '.join(HTTP_VERSIONS)}"},
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
    ws_allowed_origins: OriginList = Field(
        default=(),
        description=(
            "Comma-separated origins a browser may open a WebSocket from, or `*` for any. Empty: only "
            "the service's own origin (Origin matching Host). Others get 403 before the upgrade "
            "(cross-site WebSocket hijacking). Clients that send no Origin (not browsers) are let in."
        ),
        json_schema_extra={"allowed": "comma-separated `scheme://host[:port]` origins, `*`, or empty"},
    )

    broker_url: BrokerUrl | None = Field(
        default=None,
        description=(
            "Broker of the rooms (`/rooms/{room}`, docs/rooms.md): `redis://host:6379/0` or `rediss://` "
            "(Redis or Valkey pub/sub), shared by every worker and instance. `memory://`: in this process "
            "only, refused with APP_WORKERS > 1 (it cannot reach other workers). Unset: `memory://` with "
            "one worker; with several, the rooms answer 503 until this is set."
        ),
        json_schema_extra={
            "allowed": "`memory://`, or `redis://` / `rediss://` `[user@]host[:port][/db]` without a password"
        },
    )
    broker_password: SecretStr | None = Field(
        default=None,
        description=(
            "Password of the broker (Redis `AUTH`; the user, if any, is in APP_BROKER_URL). Secret: give "
            "it as the file `broker_password` (k8s/components/secret-settings) or a `secretKeyRef`, "
            "never in the ConfigMap or the URL."
        ),
    )
    rooms_subscriber_buffer_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=67_108_864,
        description=(
            "Room messages one subscriber (a WebSocket or event stream of `/rooms/{room}`) may have "
            "waiting, in bytes; a subscriber that reads slower than its room is closed with 1008 "
            "(a stream: `event: too-slow`) instead of growing the worker's memory. One message always fits."
        ),
    )
    # The worked example's own setting (docs/building.md): a fork deletes it with examples/.
    quotes_url: HttpUrl | None = Field(
        default=None,
        description=(
            "Base URL of the quotes upstream that the worked example of docs/building.md "
            "(examples/quotes.py) calls. Read only by that example; a fork deletes it with it."
        ),
        json_schema_extra={"allowed": "an http(s) URL"},
    )

    @model_validator(mode="after")
    def _check_tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = ("cert", "key") if self.tls_key_file is None else ("key", "cert")
            raise ValueError(
                f"APP_TLS_{given.upper()}_FILE needs APP_TLS_{missing.upper()}_FILE: "
                "a certificate and its key go together (set both, or neither for cleartext)"
            )
        if self.tls_cert_file is None:
            for name in ("tls_client_ca_file", "tls_min_version"):
                if name in self.model_fields_set:
                    raise ValueError(
                        f"{env_name(name)} needs APP_TLS_CERT_FILE and APP_TLS_KEY_FILE (without them "
                        "the service speaks cleartext)"
                    )
        return self

    @model_validator(mode="after")
    def _check_http_versions_transport(self) -> Settings:
        versions = self.http_versions or ()
        if self.tls_cert_file is None:
            needing = [v for v in versions if v in OVER_TLS_ONLY]
            if needing:
                raise ValueError(
                    f"APP_HTTP_VERSIONS={','.join(versions)}: {', '.join(needing)} needs TLS "
                    "(set APP_TLS_CERT_FILE and APP_TLS_KEY_FILE; cleartext HTTP/2 is h2c)"
                )
        else:
            cleartext = [v for v in versions if v in CLEARTEXT_ONLY]
            if cleartext:
                raise ValueError(
                    f"APP_HTTP_VERSIONS={','.join(versions)}: h2c is cleartext HTTP/2, and with "
                    "APP_TLS_CERT_FILE the service speaks TLS only (HTTP/2 over TLS is h2)"
                )
        return self

    @model_validator(mode="after")
    def _refuse_in_process_broker_with_workers(self) -> Settings:
        if self.broker_url == "memory://" and self.workers > 1:
            raise ValueError(
                f"APP_BROKER_URL=memory:// cannot reach the other workers (APP_WORKERS={self.workers}): "
                "set APP_BROKER_URL=redis://... or APP_WORKERS=1"
            )
        return self

    @model_validator(mode="after")
    def _check_broker_password_has_a_broker(self) -> Settings:
        if self.broker_password is not None and not (self.broker_url or "").startswith("redis"):
            raise ValueError("APP_BROKER_PASSWORD needs APP_BROKER_URL=redis://... or rediss://...")
        return self

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
        if self.effective_docs_enabled and not _is_loopback(self.host):
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

    # Derived values are named effective_<field>: the field, or what its unset default means.
    # Whether the process runs in Kubernetes is read with the rest of the environment, once.
    _in_kubernetes: bool = PrivateAttr(default_factory=lambda: "KUBERNETES_SERVICE_HOST" in os.environ)
    # Where each value came from, for `python -m deploy config` (load_settings records it).
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    def traced_to(self, sources: dict[str, str]) -> Self:
        """These settings, knowing which source gave each value (load_settings calls it)."""
        self._sources = sources
        return self

    def source_of(self, name: str) -> str:
        """`environment`, `.env`, `secret file`, `argument`, or for a value no source gave,
        `default` (or `default, computed` where the default depends on the machine)."""
        if name in self._sources:
            return self._sources[name]
        return "default, computed" if type(self).model_fields[name].default_factory else "default"

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.env == "production" else "console"

    @property
    def effective_drain_seconds(self) -> int:
        if self.drain_seconds is not None:
            return self.drain_seconds
        # The kubelet sets the variable in every container, whatever enableServiceLinks says.
        return 0 if self._in_kubernetes else DEFAULT_DRAIN_SECONDS

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def quic_asked(self) -> bool:
        """HTTP/3 asked for: QUIC over UDP, which a server serves from one process only."""
        return self.http_versions is not None and "h3" in self.http_versions

    @property
    def effective_docs_enabled(self) -> bool:
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
        shown["effective_docs_enabled"] = self.effective_docs_enabled
        shown["effective_log_format"] = self.effective_log_format
        shown["effective_drain_seconds"] = self.effective_drain_seconds
        return shown


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        lines = env_file_lines(env_file) if env_file is not None else []
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise SettingsError(f"cannot read {env_file}: {reason}") from None
    problems = unknown_variables(os.environ, settings_class)
    if env_file is not None:
        problems += unknown_env_file_keys(env_file, lines, settings_class)
    directory, explicit = secrets_directory(secrets_dir, os.environ, lines)
    kwargs: dict[str, Any] = {"_env_file": env_file, "_secrets_dir": None}
    if secrets_dir is not None:
        overrides = {**overrides, "secrets_dir": secrets_dir}
    # A relative path is left to the field's own validation, which names it.
    if directory.is_absolute():
        if directory.is_dir():
            problems += secret_file_problems(directory, settings_class)
            kwargs["_secrets_dir"] = directory
        elif explicit:
            problems.append(
                f"invalid {env_name('secrets_dir')}={str(directory)!r}: no such directory "
                "(allowed: an absolute path to a directory)"
            )
    if problems:
        raise SettingsError("\n".join(problems))
    try:
        settings = settings_class(**kwargs, **overrides)
    except ValidationError as error:
        raise SettingsError(describe(error, settings_class, env_file)) from None
    return settings.traced_to(value_sources(settings_class, env_file, kwargs["_secrets_dir"], overrides))


def value_sources(
    settings_class: type[Settings], env_file: Path | None, secrets_dir: Path | None, overrides: dict[str, Any]
) -> dict[str, str]:
    """Which source gave each field its value: the same sources, in the same order of precedence,
    that `settings_customise_sources` gives pydantic-settings, each asked what it provides."""
    ordered = settings_class.settings_customise_sources(
        settings_class,
        InitSettingsSource(settings_class, init_kwargs=overrides),
        EnvSettingsSource(settings_class),
        DotEnvSettingsSource(settings_class, env_file=env_file),
        SecretsSettingsSource(settings_class, secrets_dir=secrets_dir),
    )
    found: dict[str, str] = {}
    for source in reversed(ordered):  # the first source wins: it is applied last
        label = _SOURCE_LABELS[next(kind for kind in _SOURCE_LABELS if isinstance(source, kind))]
        found.update({name: label for name in source() if name in settings_class.model_fields})
    return found


# Most specific first: a DotEnvSettingsSource is an EnvSettingsSource too.
_SOURCE_LABELS: dict[type[PydanticBaseSettingsSource], str] = {
    DotEnvSettingsSource: ".env",
    EnvSettingsSource: "environment",
    SecretsSettingsSource: "secret file",
    InitSettingsSource: "argument",
}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the real environment."""
    return load_settings()
