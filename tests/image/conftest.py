"""The image, built once per run for every test here: with buildah, on a base made locally with
debootstrap (or ASGI_DEPLOY_BASE_IMAGE, e.g. python:3.11-slim where a registry is reachable)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.k8s.tools import DOCKERFILE, REPO_ROOT
from tests.support.tools import missing

BASE_IMAGE = os.environ.get("ASGI_DEPLOY_BASE_IMAGE", "localhost/asgi-deploy-base:bookworm")
IMAGE = "localhost/asgi-deploy:image-test"


def sh(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def must(*command: str, timeout: float = 120) -> str:
    result = sh(*command, timeout=timeout)
    if result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr[-3000:]
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{output}")
    return result.stdout


def missing_prerequisite() -> str | None:
    for tool in ("buildah", "podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y buildah podman runc debootstrap)"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "needs root (buildah chroot isolation and debootstrap)"
    for path in ("uv.lock", "service/main.py", "deploy/__main__.py"):
        if not (REPO_ROOT / path).is_file():
            return f"{path} does not exist yet"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    reason = missing_prerequisite()
    if reason:
        missing(reason)
    if sh("podman", "image", "exists", BASE_IMAGE).returncode != 0:
        if "ASGI_DEPLOY_BASE_IMAGE" in os.environ:
            must("podman", "pull", BASE_IMAGE, timeout=600)
        elif shutil.which("debootstrap") is None:
            missing(f"no base image {BASE_IMAGE} and debootstrap is not installed to make one")
        else:
            must("bash", str(REPO_ROOT / "deploy" / "build-base-image.sh"), BASE_IMAGE, timeout=900)
    must(
        "buildah", "bud", "--isolation", "chroot", "--layers", "--quiet",
        "-f", str(DOCKERFILE), "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "-t", IMAGE, str(REPO_ROOT),
        timeout=900,
    )  # fmt: skip
    return IMAGE
