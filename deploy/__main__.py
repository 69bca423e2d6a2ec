"""`python -m deploy [PROFILE]` runs a server; `python -m deploy config [PROFILE]` shows its configuration.

Settings are validated before any server code runs: a wrong value ends the
process with status 2 and one readable message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploy import drain, metrics_dir, reload
from deploy.common import UnsupportedSettingError, check_app_module
from deploy.profiles import PROFILES, Adapter, load_adapter
from service import tracing
from service.settings import Settings, SettingsError, env_name, get_settings

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
        adapter = load_adapter(profile)
        if args.command == "config":
            _print_config(profile, settings, adapter.native_config(settings))
            return 0
        adapter.native_config(settings)  # refuse unsupported settings before touching anything
        tracing.check_available(settings)
        check_app_module(settings)
        if settings.reload:
            return reload.run(profile, settings)  # its child, started with APP_RELOAD=false, launches
        return _launch(adapter, settings)
    except (SettingsError, UnsupportedSettingError) as error:
        print(f"asgi-deploy: {error}", file=sys.stderr)
        return EXIT_USAGE


def _launch(adapter: Adapter, settings: Settings) -> int:
    """Prepare what the workers share, export it to them, then run the server."""
    cleanup: list[Path] = []
    if settings.metrics_enabled:
        directory = metrics_dir.prepare(settings.metrics_dir)
        metrics_dir.export(directory)
        _export_setting("metrics_dir", directory)
        if settings.metrics_dir is None:
            cleanup.append(directory)
    window = settings.effective_drain_seconds
    flag = settings.drain_file
    if window and flag is None:
        run_dir = Path(tempfile.mkdtemp(prefix="asgi-deploy-run-"))
        cleanup.append(run_dir)
        flag = run_dir / "draining"
        _export_setting("drain_file", flag)
    launcher_pid = os.getpid()
    try:
        if window and flag is not None:
            return drain.run_with_drain(lambda: adapter.run(get_settings()), window, flag)
        return adapter.run(get_settings())
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


def _print_config(profile: str, settings: Settings, native: Any) -> None:
    document = {"profile": profile, "settings": settings.public_dump(), "native": native}
    print(json.dumps(document, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
