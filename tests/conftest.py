import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--base-url",
        default=None,
        help="run the HTTP smoke checks against an already-running deployment instead",
    )
