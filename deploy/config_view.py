"""What `python -m deploy config [PROFILE]` prints: the settings that matter, where each value came
from and what the chosen server does with it; `--full`, the launch config as it runs (JSON): the
server's own part and the project's, the very object the profile's `serve` is handed."""

from __future__ import annotations

import json
from typing import Any

from deploy.profile import Native, Profile, Project, Refused, spell
from service.settings import Settings, env_name

VALUE_WIDTH = 36  # a longer value is cut: `--full` has it whole
HTTP_VERSIONS = "http_versions"


def full(server: Profile, settings: Settings) -> str:
    """Everything, for a program or a close look: settings, their sources, the launch config."""
    document = {
        "profile": server.name,
        "settings": settings.public_dump(),
        "sources": {name: settings.source_of(name) for name in type(settings).model_fields},
        **server.launch_config(settings).document(),
        "support": server.support(),
    }
    return json.dumps(document, indent=2, default=str)


def concise(server: Profile, settings: Settings, named_on_command_line: bool) -> str:
    """One line per setting that was given a value or that this server takes part in."""
    server.check(settings)  # a setting it cannot honour: the one-line refusal, as at start-up
    shown = settings.public_dump()
    rows = []
    for name in type(settings).model_fields:
        source = "command line" if name == "server" and named_on_command_line else settings.source_of(name)
        support = server.settings.get(name)
        if name == HTTP_VERSIONS:  # every server takes part: what it serves, declared by `Profile.http`
            rows.append((env_name(name), _value(shown[name]), source, _versions_served(server, settings)))
            continue
        if source.startswith("default") and support is None:
            continue  # at its default, and the same on every server: docs/settings.md
        rows.append((env_name(name), _value(shown[name]), source, _what_happens(support)))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    title = f"{server.name}: {len(rows)} settings given a value or taken part in by {server.name}"
    lines = [
        f"{title}; the others are",
        "at their defaults, applied by the app or the launcher alike on every server (docs/settings.md).",
        f"What runs (the server's config, the project's part): python -m deploy config {server.name} --full",
        "",
        "  ".join(
            (
                "setting".ljust(widths[0]),
                "value".ljust(widths[1]),
                "from".ljust(widths[2]),
                "on " + server.name,
            )
        ),
    ]
    lines += [
        "  ".join((*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]))
        for row in rows
    ]
    return "\n".join(lines)


def _value(value: Any) -> str:
    if value is None or value == "":
        return "(unset)"
    if value == "**********":
        return "(set, secret)"
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def _versions_served(server: Profile, settings: Settings) -> str:
    transport = "over TLS" if settings.tls_enabled else "in cleartext"
    return f"serves {spell(server.http.served(settings))} {transport}"


def _what_happens(support: Native | Project | Refused | None) -> str:
    if support is None:
        return "the app or the launcher, as on every server"
    if isinstance(support, Refused):
        return f"not applied: {support.why}"
    if isinstance(support, Project):
        return support.describe()
    return f"native {support.describe()}"
