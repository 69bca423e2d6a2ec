import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a non-interactive shell (`cmd &`, nohup, some CI
    # runners) inherits SIGINT ignored, and every server it starts would too: Ctrl-C tests
    # would then test nothing. Catching it here gives the servers the default, as a terminal does.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--base-url",
        default=None,
        help="run the HTTP smoke checks against an already-running deployment instead",
    )
