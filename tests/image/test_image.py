"""The real image (tests/image/conftest.py builds it), run with podman under each server with
the security settings the Deployment declares (user, read-only root, writable volumes,
capabilities, privilege escalation: read from the rendered manifest, not written here),
probed over 127.0.0.1, then stopped with SIGTERM, which must end it cleanly and quickly.
tests/image/test_kube_play.py runs the manifests themselves.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from deploy.profiles import PROFILES
from devkit.kube_play import app_container, only, pod_spec, render
from devkit.process import REPO_ROOT
from tests.image.conftest import must, sh

pytestmark = pytest.mark.image

UID_GID = "10001:10001"
STOP_TIMEOUT = 30  # seconds podman waits after SIGTERM before SIGKILL
# runc (crun needs cgroup rights a nested host may lack) and explicit limits
# (inheriting the host's may be refused in a nested container).
RUNTIME = ("--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")


def manifest_flags(overlay: str) -> list[str]:
    """`podman run` flags for what the overlay's Deployment declares about the container."""
    deployment = only(render(overlay), "Deployment")
    pod, container = pod_spec(deployment), app_container(deployment)
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    flags = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    flags += [f"--tmpfs={m['mountPath']}" for m in container["volumeMounts"] if m["name"] in empty_dirs]
    flags += [f"--cap-drop={cap}" for cap in security.get("capabilities", {}).get("drop", [])]
    flags += [f"--cap-add={cap}" for cap in security.get("capabilities", {}).get("add", [])]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    return flags


def test_manifest_flags_carry_the_security_settings() -> None:
    flags = manifest_flags("uvicorn")
    assert flags[:2] == ["--user", UID_GID]
    assert {"--read-only", "--tmpfs=/tmp", "--cap-drop=ALL", "no-new-privileges"} <= set(flags)


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


# What the image installed of the two packages: each Python file's path and SHA-256.
INSTALLED_CODE = """
import hashlib, json, pathlib, deploy, service
files = {}
for package in (deploy, service):
    root = pathlib.Path(package.__file__).parent
    for path in root.rglob("*.py"):
        files[str(path.relative_to(root.parent))] = hashlib.sha256(path.read_bytes()).hexdigest()
print(json.dumps(files))
"""


def test_the_image_carries_the_code_of_this_tree(image: str) -> None:
    # A rebuild after a change must install the changed code, not a build cached from before it.
    result = sh(
        "podman", "run", "--rm", *RUNTIME, "--network", "none", "--entrypoint", "python", image,
        "-c", INSTALLED_CODE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    installed = json.loads(result.stdout)
    tree = {
        str(path.relative_to(REPO_ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for package in ("deploy", "service")
        for path in (REPO_ROOT / package).rglob("*.py")
    }
    assert sorted(set(tree) ^ set(installed)) == []
    assert sorted(name for name in tree if tree[name] != installed[name]) == []


@pytest.fixture
def container(image: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    server = request.param
    flags = manifest_flags(server)
    name = f"asgi-deploy-test-{server}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    try:
        must(
            "podman", "run", "--detach", "--name", name,
            *RUNTIME, "--network", "host",
            *flags,
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
