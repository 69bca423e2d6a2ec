"""The shapes settings share, each defined once with its parsing, validation and allowed values.

A field of `Settings` that is a list of paths, networks, hosts or origins, an
absolute path, an import string or a host just takes one of these types; its
validation and the "allowed" text of its error messages and README row come along.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# Dotted names on both sides of the colon: what pkgutil.resolve_name (gunicorn's loader here)
# and every server's own importer accept alike.
_IMPORT_STRING = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
_ROOT_PATH = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def allowed(text: str) -> object:
    """The words error messages and the README use for what a type accepts."""
    return Field(json_schema_extra={"allowed": text})


def one_of(choices: Collection[str]) -> Callable[[str], str]:
    """A validator of a choice among names a table holds (a Literal would write them out again)."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError("not one of the allowed values")
        return value

    return check


def split_commas(value: object) -> object:
    """Comma-separated text from the environment -> tuple (the list types read no JSON)."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _paths(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        if not item.startswith("/"):
            raise ValueError(f"{item!r} does not start with `/`")
    return value


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
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


def _hosts(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("must name at least one host, or `*`")
    for item in value:
        if item != "*" and not _HOSTNAME.match(item.removeprefix("*.")):
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"{item!r} is not a host name, `*.domain` or `*`") from None
    return value


def _origins(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        if item != "*" and not _ORIGIN.match(item):
            raise ValueError(f"{item!r} is not an origin like https://app.example.com")
    return value


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError("not an IP address or host name") from None
    return value


BROKER_SCHEMES = ("memory", "redis", "rediss")


def _broker_url(value: str) -> str:
    """`memory://` or `redis[s]://[user@]host[:port][/db]`; a password belongs in APP_BROKER_PASSWORD.

    Errors never quote the value: it may hold a password by mistake.
    """
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        raise ValueError("not a URL") from None
    if url.scheme not in BROKER_SCHEMES:
        raise ValueError("the scheme must be memory://, redis:// or rediss://")
    if url.password is not None:
        raise ValueError("holds a password: give it as APP_BROKER_PASSWORD (a secret), not in the URL")
    if url.scheme == "memory":
        if url.netloc or url.path or url.query:
            raise ValueError("memory:// takes nothing after the scheme")
        return value
    if not url.hostname or (port is not None and not 1 <= port <= 65535):
        raise ValueError("a redis URL needs a host (and a port in 1-65535 if given)")
    if url.path not in ("", "/") and not url.path[1:].isdigit():
        raise ValueError("the path of a redis URL is a database number, like /0")
    return value


def _import_string(value: str) -> str:
    if not _IMPORT_STRING.match(value):
        raise ValueError("not an import string of the form `module:attribute`")
    return value


def _root_path(value: str) -> str:
    if value.endswith("/") or not _ROOT_PATH.match(value):
        raise ValueError("must be empty or start with `/`, without a trailing `/`")
    return value


def _absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError("must be an absolute path")
    return value


# The HTTP versions APP_HTTP_VERSIONS names, as ALPN spells them (`h2c`: cleartext HTTP/2, prior knowledge).
HTTP_VERSIONS = ("http/1.1", "h2", "h2c", "h3")


def _http_versions(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("must name at least one version")
    for item in value:
        if item not in HTTP_VERSIONS:
            raise ValueError(f"{item!r} is not an HTTP version this setting knows")
    return tuple(dict.fromkeys(value))  # each once, in the order given


HttpVersionList = Annotated[
    tuple[str, ...],
    NoDecode,
    BeforeValidator(split_commas),
    AfterValidator(_http_versions),
    allowed(f"comma-separated, from {', '.join(HTTP_VERSIONS)}"),
]
PathList = Annotated[
    tuple[str, ...],
    NoDecode,
    BeforeValidator(split_commas),
    AfterValidator(_paths),
    allowed("comma-separated paths starting with `/`, or empty"),
]
NetworkList = Annotated[
    tuple[str, ...],
    NoDecode,
    BeforeValidator(split_commas),
    AfterValidator(_networks),
    allowed("comma-separated IP addresses or CIDR networks, or `*`"),
]
HostList = Annotated[
    tuple[str, ...],
    NoDecode,
    BeforeValidator(split_commas),
    AfterValidator(_hosts),
    allowed("comma-separated host names, `*.domain` patterns, or `*`"),
]
OriginList = Annotated[
    tuple[str, ...],
    NoDecode,
    BeforeValidator(split_commas),
    AfterValidator(_origins),
    allowed("comma-separated `scheme://host[:port]` origins, or empty"),
]
Host = Annotated[str, AfterValidator(_host), allowed("an IPv4/IPv6 address or a host name")]
ImportString = Annotated[str, AfterValidator(_import_string), allowed("an import string `module:attribute`")]
RootPath = Annotated[
    str, AfterValidator(_root_path), allowed("empty, or a path like `/api` (no trailing slash)")
]
AbsolutePath = Annotated[Path, AfterValidator(_absolute)]
BrokerUrl = Annotated[
    str,
    AfterValidator(_broker_url),
    allowed("`memory://`, or `redis://` / `rediss://` `[user@]host[:port][/db]` without a password"),
]


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


def _otlp_headers(value: SecretStr) -> SecretStr:
    otlp_header_map(value)
    return value


OtlpHeaders = Annotated[
    SecretStr,
    AfterValidator(_otlp_headers),
    allowed("comma-separated `key=value` pairs with HTTP header names as keys"),
]
