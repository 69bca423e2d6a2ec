"""Every overlay's real manifests, run as pods with `podman kube play` (devkit/kube_play.py, what
`make kube-play` runs), with and without the secret-settings component: no cluster needed.

Each pod must start; the paths of its startup, readiness and liveness probes must answer on
the probes' ports (podman does not run probes, so the test does); the container must run as
the manifests say (user and groups, read-only root with only the declared volumes writable, no
capabilities, no privilege escalation, RuntimeDefault seccomp, the image's entrypoint as PID 1);
every ConfigMap key must reach the process and agree with `python -m deploy config` inside it;
a Secret key must arrive as a file the settings read; logs must be JSON; and stopping it the way
the kubelet does (SIGTERM, then the manifest's grace period) must end it cleanly, well inside
that grace period. A manifest that disagrees with the image must fail here: one such breakage
is played below.

All pods are played together and stopped together, so the run costs about one start and one
stop, not ten.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.profiles import PROFILES
from devkit.kube_play import (
    KubePlayError,
    Play,
    Stopped,
    app_container,
    for_podman,
    only,
    play_down,
    play_up,
    pod_spec,
    podman_env,
    render,
    run,
    wait_answering,
)
from devkit.process import free_port
from tests.k8s.tools import K8S_DIR

pytestmark = pytest.mark.image

SECRET_COMPONENT = "secret-settings"  # noqa: S105 - a component name
# A setting no ConfigMap sets, so only the Secret file can explain its value.
SECRET_KEY, SECRET_VALUE = "otel_service_name", "from-the-secret"
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "asgi-deploy-secrets"},
    "stringData": {SECRET_KEY: SECRET_VALUE},
}
DEPLOYMENTS = [
    *((overlay, ()) for overlay in sorted(PROFILES)),
    *((overlay, (SECRET_COMPONENT,)) for overlay in sorted(PROFILES)),
]
STOPS_AT_ONCE = 5
READY_TIMEOUT = 120  # ten pods starting at once on two shared cores
# Writable without being declared: the IPC mounts every runtime (and the kubelet) gives a
# container, /dev/shm (gunicorn's worker heartbeat files) and /dev/mqueue.
RUNTIME_WRITABLE = {"/dev/shm", "/dev/mqueue"}  # noqa: S108
# Directories where an image or a careless manifest could leave something writable.
WELL_KNOWN_DIRS = (
    "/",
    "/app",
    "/app/.venv",
    "/etc",
    "/home",
    "/opt",
    "/root",
    "/run",
    "/srv",
    "/usr",
    "/var",
)
# Run inside the container as its user: what the kernel says about PID 1, and where a file can
# really be created.
INSPECT = f"""
import json, os, tempfile
status = dict(line.split(":\\t", 1) for line in open("/proc/1/status").read().splitlines() if ":\\t" in line)
mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
writable = []
for path in sorted(set(mounts) | set({WELL_KNOWN_DIRS!r})):
    if path.startswith(("/proc", "/sys")) or not os.path.isdir(path):
        continue
    try:
        fd, name = tempfile.mkstemp(dir=path)
    except OSError:
        continue
    os.close(fd)
    os.unlink(name)
    writable.append(path)
environ = dict(e.split("=", 1) for e in open("/proc/1/environ").read().split("\\0") if "=" in e)
print(json.dumps({{
    "status": {{k: status[k].split() for k in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff",
                                               "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}},
    "writable": writable,
    "environ": {{k: v for k, v in environ.items() if k.startswith("APP_")}},
    "cmdline": open("/proc/1/cmdline").read().rstrip("\\0").split("\\0"),
}}))
"""


@dataclass
class Deployed:
    key: str
    overlay: str
    components: tuple[str, ...]
    objects: list[dict[str, Any]]  # as rendered, before any podman change
    play: Play
    env: dict[str, str]
    ready_error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def container(self) -> str:
        return self.play.containers[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return only(self.objects, "Deployment")

    def exec(self, *command: str) -> str:
        return run(["podman", "exec", self.container, *command], timeout=60, env=self.env).stdout

    def logs(self) -> str:
        result = run(["podman", "logs", self.container], timeout=30, env=self.env, check=False)
        return result.stdout + result.stderr


def key_of(overlay: str, components: tuple[str, ...]) -> str:
    return "+".join((overlay, *components))


def play(
    overlay: str,
    components: tuple[str, ...],
    image: str,
    workdir: Path,
    objects: list[dict[str, Any]] | None = None,
) -> Deployed:
    """Render (unless given), convert and play one deployment under a name of its own."""
    objects = objects if objects is not None else render(overlay, components)
    key = key_of(overlay, components)
    name = f"asgi-deploy-test-{key.replace('+', '-')}"
    secrets = {SECRET["metadata"]["name"]: SECRET} if SECRET_COMPONENT in components else {}
    played, plan = for_podman(
        objects, image=image, host_ports={"http": free_port()}, workdir=workdir, name=name, secrets=secrets
    )
    env = podman_env(workdir)
    deployed = Deployed(key, overlay, components, objects, plan, env)
    # A pod of that name left over from an interrupted run would refuse the play.
    run(["podman", "pod", "rm", "--force", f"{name}-pod-0"], env=env, check=False)
    play_up(played, plan, env)
    return deployed


def startup_path(deployed: Deployed) -> tuple[str, str]:
    probe = app_container(deployed.deployment)["startupProbe"]["httpGet"]
    return probe["path"], probe["port"]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kube-play-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def deployed(image: str, workdir: Path) -> Iterator[dict[str, Deployed]]:
    """Every deployment played at once, each waited for; stopped by the last test (or here)."""
    pods: dict[str, Deployed] = {}
    try:
        for overlay, components in DEPLOYMENTS:
            pods[key_of(overlay, components)] = play(overlay, components, image, workdir)
        for pod in pods.values():
            path, port = startup_path(pod)
            try:
                wait_answering(pod.play, path, port, pod.env, timeout=READY_TIMEOUT)
            except KubePlayError as error:
                pod.ready_error = str(error)
        yield pods
    finally:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(pods) or 1) as pool:
            list(
                pool.map(lambda pod: play_down(pod.play, pod.env), [p for p in pods.values() if p.play.pods])
            )


@pytest.fixture(params=[key_of(o, c) for o, c in DEPLOYMENTS])
def pod(request: pytest.FixtureRequest, deployed: dict[str, Deployed]) -> Deployed:
    result = deployed[request.param]
    if result.ready_error:
        pytest.fail(f"{result.key} never answered its startup probe: {result.ready_error}")
    return result


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def container_port(deployed: Deployed, port: str | int) -> str:
    """The name of the container port a probe names (by name or number)."""
    for declared in app_container(deployed.deployment)["ports"]:
        if port in (declared["name"], declared["containerPort"]):
            return str(declared["name"])
    raise AssertionError(f"a probe names port {port!r}, which the container does not declare")


def check_probes(deployed: Deployed) -> None:
    container = app_container(deployed.deployment)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        host_port = deployed.play.host_ports[container_port(deployed, probe["port"])]
        status, body = get(f"http://127.0.0.1:{host_port}{probe['path']}")
        assert status == 200, f"{kind} {probe['path']} on {probe['port']}: {status} {body!r}"


def inspect(deployed: Deployed) -> dict[str, Any]:
    if "inspect" not in deployed.facts:
        deployed.facts["inspect"] = json.loads(deployed.exec("python", "-c", INSPECT))
    facts: dict[str, Any] = deployed.facts["inspect"]
    return facts


def check_runs_as_declared(deployed: Deployed, image: str) -> None:
    pod, container = pod_spec(deployed.deployment), app_container(deployed.deployment)
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    facts = inspect(deployed)
    status = facts["status"]
    assert set(status["Uid"]) == {str(security["runAsUser"])}, status["Uid"]
    assert set(status["Gid"]) == {str(security["runAsGroup"])}, status["Gid"]
    if "fsGroup" in pod.get("securityContext", {}):
        assert str(pod["securityContext"]["fsGroup"]) in status["Groups"], status["Groups"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security["capabilities"].get("add")
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap][0], 16) == 0, f"{cap} = {status[cap][0]}"
    assert security["allowPrivilegeEscalation"] is False
    assert status["NoNewPrivs"] == ["1"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert status["Seccomp"] == ["2"], "no seccomp filter"
    assert security["readOnlyRootFilesystem"] is True
    declared = {m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")}
    assert set(facts["writable"]) == declared | RUNTIME_WRITABLE, (
        f"writable {facts['writable']}, declared writable {sorted(declared)}"
    )
    config = json.loads(run(["podman", "image", "inspect", image], env=deployed.env).stdout)[0]["Config"]
    expected = (container.get("command") or config["Entrypoint"]) + (container.get("args") or [])
    assert facts["cmdline"] == expected


def configmap_data(deployed: Deployed) -> dict[str, str]:
    data: dict[str, str] = only(deployed.objects, "ConfigMap")["data"]
    return data


def setting_text(value: Any) -> str:
    """A value of `python -m deploy config` as it would be written in an env file."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def settings_inside(deployed: Deployed) -> dict[str, Any]:
    if "config" not in deployed.facts:
        deployed.facts["config"] = json.loads(deployed.exec("python", "-m", "deploy", "config", "--full"))
    settings: dict[str, Any] = deployed.facts["config"]["settings"]
    return settings


def settings_env_keys() -> set[str]:
    lines = (K8S_DIR / "base" / "settings.env").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line.strip() and not line.startswith("#")}


def removed_by_overlay(overlay: str) -> set[str]:
    """The settings.env keys an overlay removes on purpose (a JSON patch `remove` of /data/KEY)."""
    kustomization = yaml.safe_load((K8S_DIR / "overlays" / overlay / "kustomization.yaml").read_text())
    removed = set()
    for patch in kustomization.get("patches", []):
        for operation in yaml.safe_load(patch.get("patch", "[]")) or []:
            if operation.get("op") == "remove" and operation["path"].startswith("/data/"):
                removed.add(operation["path"].removeprefix("/data/"))
    return removed


def check_configmap_reached_process(deployed: Deployed) -> None:
    data = configmap_data(deployed)
    expected = settings_env_keys() - removed_by_overlay(deployed.overlay)
    assert expected <= set(data), "a settings.env key is missing from the ConfigMap"
    environ = inspect(deployed)["environ"]
    assert {k: environ.get(k) for k in data} == data, "PID 1's environment differs from the ConfigMap"
    settings = settings_inside(deployed)
    for key, value in data.items():
        field_name = key.removeprefix("APP_").lower()
        assert setting_text(settings[field_name]) == value, f"{key}: {settings[field_name]!r} != {value!r}"


def check_logs_are_json(deployed: Deployed) -> None:
    assert get(f"{deployed.play.base_url}/")[0] == 200
    lines = [line for line in deployed.logs().splitlines() if line.strip()]
    assert lines, "no logs"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    assert all({"time", "level", "message"} <= set(r) for r in records)
    access = [r for r in records if r.get("path") == "/" and r.get("status") == 200]
    assert access, "no JSON access line for GET /"
    assert access[-1]["server"] == deployed.overlay


def expected_exit(profile: str, settings: dict[str, Any]) -> int:
    # A lone uvicorn server process (one worker nobody supervises) re-raises the signal it drained
    # on (tests/smoke/test_process.py): 128 + SIGTERM as the container runtime reports it. Under
    # the supervisor (the manifests watch their workers) and on every other profile: 0.
    supervised = settings["worker_timeout"] or settings["max_worker_memory"] or settings["max_requests"]
    return 143 if profile == "uvicorn" and int(settings["workers"]) == 1 and not supervised else 0


def test_every_pod_answers_its_probes(pod: Deployed) -> None:
    check_probes(pod)


def test_every_pod_runs_as_the_manifests_say(pod: Deployed, image: str) -> None:
    check_runs_as_declared(pod, image)


def test_every_configmap_key_reaches_the_process(pod: Deployed) -> None:
    check_configmap_reached_process(pod)


def test_secret_keys_arrive_as_files_the_settings_read(pod: Deployed) -> None:
    if SECRET_COMPONENT not in pod.components:
        assert settings_inside(pod)["otel_service_name"] != SECRET_VALUE
        return
    mount = next(m for m in app_container(pod.deployment)["volumeMounts"] if m["name"] == "secret-settings")
    assert mount["readOnly"] is True
    assert pod.exec("cat", f"{mount['mountPath']}/{SECRET_KEY}") == SECRET_VALUE
    assert settings_inside(pod)["otel_service_name"] == SECRET_VALUE


def test_every_pod_logs_json(pod: Deployed) -> None:
    check_logs_are_json(pod)


@pytest.mark.timeout(180)
def test_every_pod_stops_cleanly_inside_its_grace_period(deployed: dict[str, Deployed]) -> None:
    running = [p for p in deployed.values() if p.play.pods and not p.ready_error]
    settings = {p.key: settings_inside(p) for p in running}
    # A few at a time: ten podman commands at once on two cores would time podman, not the pods.
    with concurrent.futures.ThreadPoolExecutor(max_workers=STOPS_AT_ONCE) as pool:
        stopped: dict[str, Stopped] = dict(
            zip((p.key for p in running), pool.map(lambda p: play_down(p.play, p.env), running), strict=True)
        )
    for pod in running:
        pod.play.pods.clear()  # stopped and removed: nothing left for the fixture
    for pod in running:
        seconds = ", ".join(f"{s:.1f}" for s in stopped[pod.key].exit_seconds)
        print(f"[kube-play] {pod.key}: exit {stopped[pod.key].exit_codes} {seconds}s after SIGTERM")
    problems = []
    for pod in running:
        result, grace = stopped[pod.key], pod.play.grace_seconds
        expected = expected_exit(pod.overlay, settings[pod.key])
        # Exit status 137 would mean the runtime's SIGKILL at the end of the grace period.
        if result.exit_codes != [expected] or not all(s < grace / 2 for s in result.exit_seconds):
            seconds = ", ".join(f"{s:.1f}" for s in result.exit_seconds)
            problems.append(
                f"{pod.key}: exit {result.exit_codes} (expected {expected}) {seconds}s after SIGTERM"
            )
    assert not problems, f"grace period {grace}s:\n" + "\n".join(problems)
    assert len(running) == len(DEPLOYMENTS), "some deployments never started"


def test_a_manifest_the_image_disagrees_with_fails(image: str, workdir: Path) -> None:
    """Without the /tmp emptyDir, the read-only image has nowhere to write: the pod must not come up."""
    objects = copy.deepcopy(render("uvicorn"))
    deployment = only(objects, "Deployment")
    pod_spec(deployment)["volumes"] = []
    app_container(deployment)["volumeMounts"] = []
    broken = play("uvicorn", ("no-tmp",), image, workdir, objects=objects)
    try:
        path, port = startup_path(broken)
        with pytest.raises(KubePlayError, match="container exited") as failure:
            wait_answering(broken.play, path, port, broken.env, timeout=60)
        # The launcher's one-line refusal (deploy/temporary.py), not a traceback.
        assert "no writable temporary directory for the metrics files" in str(failure.value)
        assert "Traceback" not in str(failure.value)
    finally:
        play_down(broken.play, broken.env)
