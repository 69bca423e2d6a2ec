"""The app a user extends (service/) uses only public names of other packages.

A private name (one leading underscore) of FastAPI, Starlette, pydantic or prometheus-client can
change in any release; a fork that takes that release must not break. A fix that truly needs a
library's internals is a carried patch under deploy/ (docs/upstream.md), never in service/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWN = ("service", "deploy")  # the project's own packages: their private names are its own business
# Attributes on these names are the object's own.
OWN_OBJECTS = {"self", "cls"}


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> list[str]:
    """Every private name of another package the source imports or reads."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in OWN or node.module == "__future__":
                continue
            if any(private(part) for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [f"line {node.lineno}: {node.module}.{a.name}" for a in node.names if private(a.name)]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] not in OWN and any(private(p) for p in alias.name.split("."))
            ]
        elif isinstance(node, ast.Attribute) and private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in OWN_OBJECTS):
                found.append(f"line {node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from prometheus_client import _private", ["line 1: prometheus_client._private"]),
        ("from fastapi._compat import x", ["line 1: from fastapi._compat import ..."]),
        ("import starlette._utils", ["line 1: import starlette._utils"]),
        ("value = counter._value", ["line 1: ._value"]),
        ("self._own = 1\nx = type(self).__name__\nfrom service.x import _ours", []),
    ],
)
def test_private_names_are_found(source: str, expected: list[str]) -> None:
    assert private_uses(source) == expected


@pytest.mark.parametrize(
    "path", sorted((ROOT / "service").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_service_uses_no_private_name_of_another_package(path: Path) -> None:
    assert private_uses(path.read_text()) == []
