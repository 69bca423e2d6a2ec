"""What the settings tell a person whose input is wrong, and how they find out.

Every source (environment variables, the `.env` file, secret files) is checked for
names that are not settings, each reported with where it was written and the
nearest real setting; a value that does not validate is reported with the
variable, the value (never a secret's) and what the field allows. `allowed_values`
also fills the README's settings table. service/settings.py holds the fields;
this module only reads them.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from dotenv.parser import parse_stream
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, DotEnvSettingsSource, EnvSettingsSource

ENV_PREFIX = "APP_"
DEFAULT_SECRETS_DIR = Path("/run/secrets")


class SettingsError(Exception):
    """Invalid configuration; `str()` is a message fit for a human, without a traceback."""


CHOICE_ERRORS = frozenset({"literal_error", "enum"})
# How alike a name must be to a setting's to be suggested: APP_PROT -> APP_PORT (0.88), prot ->
# port (0.75); APP_DATABASE_URL is not APP_BROKER_URL (0.67), it is a setting of your own.
SUGGESTION_CUTOFF = 0.7


def env_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


def field_name(variable: str) -> str:
    """The field an `APP_*` variable names (whether or not it exists)."""
    return variable[len(ENV_PREFIX) :].lower()


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
    """The type itself: without `| None` and without the `Annotated` of settings_types."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def is_secret(field: FieldInfo) -> bool:
    return _strip_optional(field.annotation) is SecretStr


def _not_a_setting(
    written: str, source: str, known: list[str], spellings: list[str], fallback: Iterable[str] = ()
) -> str:
    """The one line for a name no setting has: as written, where, and the nearest setting
    (else the nearest of `fallback`, the settings that source is most likely meant for)."""
    matches = [
        m for s in spellings for m in difflib.get_close_matches(s, known, n=1, cutoff=SUGGESTION_CUTOFF)
    ]
    matches += [m for s in spellings for m in difflib.get_close_matches(s, list(fallback), n=1, cutoff=0)]
    if matches:
        return f"{written} ({source}) is not a setting of this service; did you mean {matches[0]}?"
    own = written.upper().removeprefix(ENV_PREFIX)
    return (
        f"{written} ({source}) is not a setting of this service (docs/settings.md lists them); a setting "
        f"of your own is a field `{own.lower()}` of Settings in service/settings.py, set as {ENV_PREFIX}{own}"
    )


def _variable_spellings(written: str) -> list[str]:
    upper = written.upper()
    # `PORT=` in `.env` most likely lost its prefix.
    return [upper] if upper.startswith(ENV_PREFIX) else [ENV_PREFIX + upper, upper]


def unknown_variables(environ: Mapping[str, str], settings_class: type[BaseSettings]) -> list[str]:
    known = sorted(env_name(name) for name in settings_class.model_fields)
    return [
        _not_a_setting(key, "environment variable", known, _variable_spellings(key))
        for key in sorted(environ)
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
    ]


def env_file_lines(env_file: Path) -> list[tuple[int, str | None, str | None]]:
    """(line number, key, value) of every statement; key None for a line that does not parse."""
    with env_file.open(encoding="utf-8") as stream:
        return [
            (binding.original.line, binding.key, binding.value)
            for binding in parse_stream(stream)
            if binding.key is not None or binding.error
        ]


def unknown_env_file_keys(
    env_file: Path, lines: list[tuple[int, str | None, str | None]], settings_class: type[BaseSettings]
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


def secrets_directory(
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


def secret_file_problems(directory: Path, settings_class: type[BaseSettings]) -> list[str]:
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


def _raw_values(settings_class: type[BaseSettings], env_file: Path | None) -> dict[str, object]:
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


def describe(
    error: ValidationError,
    settings_class: type[BaseSettings],
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
        # pydantic's text for a choice repeats the allowed values: say them once.
        said = "not one of the allowed values" if item["type"] in CHOICE_ERRORS else message
        lines.append(f"invalid {env_name(name)}{shown}: {said} (allowed: {allowed_values(field)})")
    return "\n".join(lines)
