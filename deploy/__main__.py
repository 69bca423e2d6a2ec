"""`python -m deploy [PROFILE]` runs a server; `python -m deploy config [PROFILE]` shows its configuration.

Settings are validated before any server code runs: a wrong value ends the
process with status 2 and one readable message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging.config
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deploy import drain, metrics_dir
from deploy.common import check_app_module
from deploy.lifecycle import ignore_operator_signals
from deploy.profile import Profile, UnsupportedSettingError
from deploy.profiles import PROFILES, load_profile
from service import tracing
from service.logs import log_config
from service.settings import Settings, SettingsError, env_name, get_settings
from service.versions import UnsupportedVersionError

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        profile = args.command if args.command in PROFILES else (args.profile or settings.server)
        if profile != settings.server:
            # Workers import the app and read the settings anew: they must agree
            # with the launcher on which server they run under.
            os.environ[env_name("server")] = profile
            get_settings.cache_clear()
            settings = get_settings()
        server = load_profile(profile)
        if args.command == "config":
            _print_config(server, settings)
            return 0
        server.check(settings)  # refuse unsupported settings before touching anything
        tracing.check_available(settings)
        check_app_module(settings)
        return _launch(server, settings)
    except (SettingsError, UnsupportedSettingError, UnsupportedVersionError) as error:
        print(f"asgi-deploy: {error}", file=sys.stderr)
        return EXIT_USAGE


def _launch(server: Profile, settings: Settings) -> int:
    """Prepare what the workers share, export it to them, then run the server."""
    cleanup: list[Path] = []
    if settings.metrics_enabled:
        directory = metrics_dir.prepare(settings.metrics_dir)
        if settings.metrics_dir is None:
            cleanup.append(directory)
        metrics_dir.export(directory)
        _export_setting("metrics_dir", directory)
    window = settings.effective_drain_seconds
    flag = settings.drain_file
    if window and flag is None:
        run_dir = Path(tempfile.mkdtemp(prefix="asgi-deploy-run-"))
        cleanup.append(run_dir)
        flag = run_dir / "draining"
        _export_setting("drain_file", flag)
    launcher_pid = os.getpid()
    # The launcher's own lines (and a supervisor's) in the format of every other line.
    logging.config.dictConfig(log_config(settings))
    # Until a server installs its own handlers, no operator signal may end the service;
    # servers that scale (gunicorn's arbiter, our supervisor) replace these.
    ignore_operator_signals(settings.server)
    try:
        if settings.metrics_enabled:
            # Only now that the directory is exported: prometheus-client picks its mode at import.
            # Importing it checks the version its hooks were written for, before any server starts.
            importlib.import_module("service.metrics")
        if window and flag is not None:
            return drain.run_with_drain(lambda: server.run(get_settings()), window, flag)
        return server.run(get_settings())
    finally:
        # Forked workers (gunicorn) leave through here too: only the launcher cleans up.
        if os.getpid() == launcher_pid:
            for path in cleanup:
                shutil.rmtree(path, ignore_errors=True)


def _export_setting(name: str, value: Path) -> None:
    """Workers read the settings anew: they must find what the launcher prepared."""
    os.environ[env_name(name)] = str(value)
    get_settings.cache_clear()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy",
        description="Run the service under one of its server profiles, configured by APP_* settings.",
    )
    choices = sorted(PROFILES)
    commands = parser.add_subparsers(dest="command")
    for name in choices:
        commands.add_parser(name, help=f"run the service under {name}")
    config = commands.add_parser("config", help="print effective settings and native server config")
    config.add_argument("profile", nargs="?", choices=choices, help="default: APP_SERVER")
    parser.set_defaults(command="run", profile=None)
    return parser


def _print_config(server: Profile, settings: Settings) -> None:
    document = {
        "profile": server.name,
        "settings": settings.public_dump(),
        "native": server.native_config(settings),
        "support": server.support(),
    }
    print(json.dumps(document, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
