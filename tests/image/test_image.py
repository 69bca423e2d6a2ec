"""The real image: built from deploy/Dockerfile with buildah on a base made
locally with debootstrap, run with podman the way Kubernetes runs it (read-only
root filesystem, UID 10001, only /tmp writable) under each server, probed over
127.0.0.1, then stopped with SIGTERM, which must end it cleanly and quickly.

Override the base with ASGI_DEPLOY_BASE_IMAGE (e.g. python:3.11-slim where a
registry is reachable); otherwise deploy/build-base-image.sh makes one once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from deploy.profiles import PROFILES
from tests.k8s.tools import DOCKERFILE, REPO_ROOT

pytestmark = pytest.mark.image

BASE_IMAGE = os.environ.get("ASGI_DEPLOY_BASE_IMAGE", "localhost/asgi-deploy-base:bookworm")
IMAGE = "localhost/asgi-deploy:image-test"
UID_GID = "10001:10001"
STOP_TIMEOUT = 30  # seconds podman waits after SIGTERM before SIGKILL
# runc (crun needs cgroup rights a nested host may lack) and explicit limits
# (inheriting the host's may be refused in a nested container).
RUNTIME = ("--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
WRITABLE = "/tmp"  # noqa: S108 - the one writable path, a tmpfs like the pod's emptyDir


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


@pytest.fixture(scope="module")
def image() -> str:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    if sh("podman", "image", "exists", BASE_IMAGE).returncode != 0:
        if "ASGI_DEPLOY_BASE_IMAGE" in os.environ:
            must("podman", "pull", BASE_IMAGE, timeout=600)
        elif shutil.which("debootstrap") is None:
            pytest.skip(f"no base image {BASE_IMAGE} and debootstrap is not installed to make one")
        else:
            must("bash", str(REPO_ROOT / "deploy" / "build-base-image.sh"), BASE_IMAGE, timeout=900)
    must(
        "buildah", "bud", "--isolation", "chroot", "--layers", "--quiet",
        "-f", str(DOCKERFILE), "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "-t", IMAGE, str(REPO_ROOT),
        timeout=900,
    )  # fmt: skip
    return IMAGE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_image_config(image: str) -> None:
    config = json.loads(must("podman", "image", "inspect", image))[0]["Config"]
    assert config["User"] == UID_GID
    assert config["Entrypoint"] == ["python", "-m", "deploy"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["APP_HOST"] == "0.0.0.0"
    assert env["APP_ENV"] == "production"
    assert env["PATH"].startswith("/app/.venv/bin:")


def test_image_has_no_compilers(image: str) -> None:
    probe = "import shutil; print([t for t in ('gcc', 'cc', 'make', 'uv', 'pip') if shutil.which(t)])"
    result = sh(
        "podman", "run", "--rm", *RUNTIME, "--network", "none", "--entrypoint", "python", image, "-c", probe
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture
def container(image: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    server = request.param
    name = f"asgi-deploy-test-{server}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    try:
        must(
            "podman", "run", "--detach", "--name", name,
            *RUNTIME, "--network", "host",
            "--read-only", "--tmpfs", WRITABLE, "--user", UID_GID,
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-e", f"APP_PORT={port}", "-e", f"APP_SERVER={server}",
            "-e", "APP_HOST=127.0.0.1", "-e", "APP_WORKERS=2",
            image,
        )  # fmt: skip
        yield name, f"http://127.0.0.1:{port}"
    finally:
        logs = sh("podman", "logs", name, timeout=30)
        print(f"--- logs of {name} ---\n{logs.stdout}{logs.stderr}")
        sh("podman", "rm", "--force", "--time", "0", name, timeout=60)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("container", sorted(PROFILES), indirect=True)
def test_serves_and_stops_cleanly(container: tuple[str, str]) -> None:
    name, base_url = container
    deadline = time.monotonic() + 60
    status = 0
    while time.monotonic() < deadline:
        try:
            status, _ = get(f"{base_url}/readyz")
        except OSError:
            status = 0
        if status == 200:
            break
        state = json.loads(must("podman", "inspect", name))[0]["State"]
        assert state["Running"], f"container exited early with status {state['ExitCode']}"
        time.sleep(0.5)
    assert status == 200, "never became ready"

    status, body = get(f"{base_url}/")
    assert status == 200
    assert json.loads(body) == {"message": "Hello, ASGI with FastAPI!"}
    assert get(f"{base_url}/healthz")[0] == 200

    # SIGTERM to PID 1 (exec-form ENTRYPOINT): the server drains and exits 0
    # well before podman would fall back to SIGKILL.
    started = time.monotonic()
    must("podman", "stop", "--time", str(STOP_TIMEOUT), name, timeout=STOP_TIMEOUT + 30)
    elapsed = time.monotonic() - started
    state = json.loads(must("podman", "inspect", name))[0]["State"]
    assert state["ExitCode"] == 0, f"exit status {state['ExitCode']} after SIGTERM"
    assert elapsed < STOP_TIMEOUT, f"took {elapsed:.1f}s to stop: SIGTERM was not handled"
