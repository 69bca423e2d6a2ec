"""`python -m deploy [PROFILE]` runs a server; `python -m deploy config [PROFILE]` shows its configuration.

Settings are validated before any server code runs: a wrong value ends the
process with status 2 and one readable message, never a traceback.
"""

from __future__ import annotations

import argparse
import logging.config
import os
import sys
from collections.abc import Sequence

from deploy import config_view, drain_front, reload
from deploy.carried import warn_outside_tested
from deploy.certificate_watch import watch_certificates
from deploy.common import check_address, check_app_module
from deploy.lifecycle import ignore_operator_signals
from deploy.plan import LaunchPlan, resolve, with_profile
from deploy.profile import UnsupportedSettingError
from deploy.profiles import PROFILES, load_profile
from service import tracing
from service.logs import log_config
from service.settings import SettingsError, get_settings
from service.tls import check_tls_files

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        name = args.command if args.command in PROFILES else (args.profile or settings.server)
        if args.command == "config":
            server, chosen = load_profile(name), with_profile(settings, name)
            named = (args.profile or args.command) not in (None, "config") and name != settings.server
            text = (
                config_view.full(server, chosen) if args.full else config_view.concise(server, chosen, named)
            )
            return _print_to_a_reader(text)
        server = load_profile(name)
        server.check(settings)  # refuse unsupported settings before touching anything
        tracing.check_available(settings)
        check_app_module(settings)
        check_tls_files(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
        if settings.reload:
            # Its child, started with APP_RELOAD=false, launches; it restarts it on every change.
            return reload.run(name, settings)
        check_address(settings)
        return _launch(resolve(name, settings))
    except (SettingsError, UnsupportedSettingError) as error:
        print(f"asgi-deploy: {error}", file=sys.stderr)
        return EXIT_USAGE


def _launch(plan: LaunchPlan) -> int:
    """Hand the plan over to the workers to be, then run the server."""
    settings = plan.settings
    launcher_pid = os.getpid()
    try:
        plan.hand_over()
        # The launcher's own lines (and a supervisor's) in the format of every other line.
        logging.config.dictConfig(log_config(settings, plan.profile.loggers))
        # Until a server installs its own handlers, no operator signal may end the service;
        # servers that scale (gunicorn's arbiter, our supervisor) replace these.
        ignore_operator_signals(settings.server)
        # One line per capability the installed releases do not guarantee; the service starts.
        warn_outside_tested(plan.profile.carried)

        def serve() -> int:
            watch_certificates(settings)  # in the server's main process: a new pair is a SIGHUP
            return plan.profile.run(settings)

        if plan.drain_seconds and settings.drain_file is not None:
            return drain_front.run_with_drain(serve, plan.drain_seconds, settings.drain_file)
        return serve()
    finally:
        # Forked workers (gunicorn) leave through here too: only the launcher cleans up.
        if os.getpid() == launcher_pid:
            plan.clean_up()


def _print_to_a_reader(text: str) -> int:
    """Print; a reader that stops early (`| head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy",
        description="Run the service under one of its server profiles, configured by APP_* settings.",
    )
    choices = sorted(PROFILES)
    commands = parser.add_subparsers(dest="command")
    for name in choices:
        commands.add_parser(name, help=f"run the service under {name}")
    config = commands.add_parser(
        "config", help="print the settings, where each came from and what the server does with it"
    )
    config.add_argument("profile", nargs="?", choices=choices, help="default: APP_SERVER")
    config.add_argument("--full", action="store_true", help="everything as JSON, what runs included")
    parser.set_defaults(command="run", profile=None, full=False)
    return parser


if __name__ == "__main__":
    sys.exit(main())
