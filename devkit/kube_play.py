"""Run one overlay's real manifests as a pod on this machine with `podman kube play`: no cluster.

    make kube-play OVERLAY=uvicorn      # build the image if needed, render, play, wait, print the URL
    make kube-down                      # SIGTERM as the kubelet sends it, then remove the pod

or `python -m devkit.kube_play up|down ...` (`--help`). The rendered objects are played as they
are, except where a single podman host needs a change, each made here and nowhere else:

- only the Deployment and its ConfigMaps are played: podman has no Service, HPA, PDB,
  NetworkPolicy or ServiceAccount (they are listed as skipped);
- the image is the one built locally; every container port is published on 127.0.0.1 only;
- an emptyDir volume gets a name of its own pod (podman makes a named volume of it, which
  every pod naming it would share and which outlives the pod), removed again on `down`;
- a Secret volume becomes a read-only directory holding the Secret's decoded keys (podman 4.3
  writes a Secret's `data` undecoded and ignores `stringData`), with the manifest's mode and
  fsGroup; the mount (path, read-only) stays the manifest's.

Probes are not run by podman (they need systemd); `up` waits for the startup probe's path on
its port instead. A host that cannot pull from a registry gets a base image made locally with
debootstrap (deploy/build-base-image.sh).

Kept out of the image (.dockerignore): it is a development tool and needs PyYAML.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = REPO_ROOT / "k8s"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
LOCAL_BASE_IMAGE = "localhost/asgi-deploy-base:bookworm"
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8080
PLAYED_KINDS = ("ConfigMap", "Deployment")
# runc: crun needs cgroup rights a nested host may lack. Explicit rlimits: inheriting the
# host's may be refused inside a nested container, and the pod's infra container fails on it.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""

Obj = dict[str, Any]


class KubePlayError(Exception):
    """A missing tool or a failed step: one line for the user, no traceback."""


def run(
    command: Sequence[str], timeout: float = 120, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The one place this tool starts a process: fixed tool commands built here, never a shell."""
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise KubePlayError(f"`{' '.join(command)}` failed ({result.returncode}): {output}")
    return result


def require(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KubePlayError(f"{tool} is not installed ({install})")
    return path


def podman() -> str:
    return require("podman", "apt-get install -y podman runc")


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return str(beside)
    return require("kubectl", "make venv-dev installs it into .venv")


# --- rendering ----------------------------------------------------------------------------


def render(overlay: str, components: Sequence[str] = (), k8s_dir: Path = K8S_DIR) -> list[Obj]:
    """`kubectl kustomize` of an overlay, with components added the way a user's overlay adds them."""
    if not (k8s_dir / "overlays" / overlay).is_dir():
        known = ", ".join(sorted(p.name for p in (k8s_dir / "overlays").iterdir()))
        raise KubePlayError(f"no overlay {overlay!r} (allowed: {known})")
    with overlay_with_components(overlay, components, k8s_dir) as directory:
        output = run([kubectl(), "kustomize", str(directory)], timeout=60).stdout
    return [obj for obj in yaml.safe_load_all(output) if obj]


@contextlib.contextmanager
def overlay_with_components(
    overlay: str, components: Sequence[str], k8s_dir: Path = K8S_DIR
) -> Iterator[Path]:
    """A directory whose kustomization adds `components` to `overlay`, as a user's own overlay would."""
    with tempfile.TemporaryDirectory() as tmp:
        rel = os.path.relpath(k8s_dir, tmp)  # kustomize refuses absolute paths to bases
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"{rel}/overlays/{overlay}"],
            "components": [f"{rel}/components/{name}" for name in components],
        }
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        yield Path(tmp)


def only(objects: Iterable[Obj], kind: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind]
    if len(found) != 1:
        raise KubePlayError(f"expected one {kind}, found {len(found)}")
    return found[0]


def pod_spec(deployment: Obj) -> Obj:
    spec: Obj = deployment["spec"]["template"]["spec"]
    return spec


def app_container(deployment: Obj) -> Obj:
    container: Obj = pod_spec(deployment)["containers"][0]
    return container


def secret_files(secret: Obj) -> dict[str, bytes]:
    """A Secret's keys as the kubelet writes them: `data` base64-decoded, `stringData` as is."""
    files = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
    files.update({key: value.encode() for key, value in (secret.get("stringData") or {}).items()})
    return files


# --- the podman form ----------------------------------------------------------------------


@dataclass
class Play:
    """One played deployment: what `down` needs to stop and remove it."""

    name: str
    manifest: str
    host_ports: dict[str, int]
    grace_seconds: int
    volumes: list[str] = field(default_factory=list)
    secret_dirs: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.host_ports['http']}"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> Play:
        return cls(**json.loads(path.read_text()))


def for_podman(
    objects: Sequence[Obj],
    *,
    image: str,
    host_ports: Mapping[str, int],
    workdir: Path,
    name: str | None = None,
    secrets: Mapping[str, Obj] | None = None,
) -> tuple[list[Obj], Play]:
    """The objects podman plays, changed only where a single host needs it (module docstring)."""
    deployment = copy.deepcopy(only(objects, "Deployment"))
    name = name or deployment["metadata"]["name"]
    deployment["metadata"]["name"] = name
    spec = pod_spec(deployment)
    container = app_container(deployment)
    container["image"] = image
    for port in container.get("ports", []):
        if port["name"] not in host_ports:
            raise KubePlayError(f"no host port given for container port {port['name']!r}")
        port["hostIP"] = LOOPBACK
        port["hostPort"] = host_ports[port["name"]]
    play = Play(
        name=name,
        manifest=str(workdir / f"{name}.yaml"),
        host_ports=dict(host_ports),
        grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30)),
    )
    renamed: dict[str, str] = {}
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume:
            renamed[volume["name"]] = volume["name"] = f"{name}-{volume['name']}"
            play.volumes.append(volume["name"])
        elif "secret" in volume:
            source = volume.pop("secret")
            secret = (secrets or {}).get(source["secretName"])
            if secret is None:
                raise KubePlayError(
                    f"the manifests mount the Secret {source['secretName']!r}: pass it with --secret FILE"
                )
            directory = workdir / f"{name}-{volume['name']}"
            write_secret_dir(directory, secret_files(secret), source, spec.get("securityContext", {}))
            volume["hostPath"] = {"path": str(directory), "type": "Directory"}
            play.secret_dirs.append(str(directory))
    for mount in container.get("volumeMounts", []):
        mount["name"] = renamed.get(mount["name"], mount["name"])
    played = [copy.deepcopy(obj) for obj in objects if obj["kind"] == "ConfigMap"]
    return [*played, deployment], play


def write_secret_dir(directory: Path, files: Mapping[str, bytes], source: Obj, pod_security: Obj) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o755)
    group = pod_security.get("fsGroup")
    mode = int(source.get("defaultMode", 0o644))
    for key, value in files.items():
        path = directory / key
        path.write_bytes(value)
        if group is not None and os.geteuid() == 0:
            os.chown(path, 0, int(group))
        path.chmod(mode)


# --- podman ---------------------------------------------------------------------------------


def podman_env(workdir: Path) -> dict[str, str]:
    """The caller's environment, with our containers.conf unless the caller brings one."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env:
        conf = workdir / "containers.conf"
        conf.write_text(
            CONTAINERS_CONF if shutil.which("runc") else CONTAINERS_CONF.split("[engine]", maxsplit=1)[0]
        )
        env["CONTAINERS_CONF"] = str(conf)
    return env


def play_up(objects: Sequence[Obj], play: Play, env: Mapping[str, str]) -> Play:
    Path(play.manifest).write_text(yaml.safe_dump_all(objects, sort_keys=False))
    output = run([podman(), "kube", "play", play.manifest], timeout=180, env=env).stdout
    section = ""
    for line in output.splitlines():
        if line.rstrip(":") in ("Pod", "Container"):
            section = line.rstrip(":")
        elif line.strip() and section == "Pod":
            play.pods.append(line.strip())
        elif line.strip() and section == "Container":
            play.containers.append(line.strip())
    if not play.pods or not play.containers:
        raise KubePlayError(f"podman kube play started no pod:\n{output}")
    return play


def inspect_container(container: str, env: Mapping[str, str]) -> Obj:
    inspected: Obj = json.loads(run([podman(), "inspect", container], env=env).stdout)[0]
    return inspected


def container_state(container: str, env: Mapping[str, str]) -> Obj:
    state: Obj = inspect_container(container, env)["State"]
    return state


def exit_seen(container: str, env: Mapping[str, str]) -> str | None:
    """How the container has exited since it was played, if it has: a Deployment's pod restarts
    it at once (restartPolicy Always), so a crash loop shows as restarts, rarely as a stopped state."""
    inspected = inspect_container(container, env)
    state, restarts = inspected["State"], inspected.get("RestartCount") or 0
    if restarts:
        return f"exited and was restarted {restarts} time(s) by its restart policy"
    if not state["Running"]:
        return f"exited with status {state['ExitCode']}"
    return None


def wait_answering(play: Play, path: str, port_name: str, env: Mapping[str, str], timeout: float) -> float:
    """Poll `GET path` on the port's host side until 200, as the startup probe would; seconds taken."""
    started = time.monotonic()
    url = f"http://{LOOPBACK}:{play.host_ports[port_name]}{path}"
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (OSError, urllib.error.URLError):
            pass
        for container in play.containers:
            exited = exit_seen(container, env)
            if exited:
                logs = run([podman(), "logs", container], env=env, check=False)
                raise KubePlayError(
                    f"container {exited} before {path} answered:\n{(logs.stdout + logs.stderr)[-3000:]}"
                )
        time.sleep(0.2)
    raise KubePlayError(f"{url} did not answer 200 within {timeout:.0f}s")


@dataclass
class Stopped:
    exit_codes: list[int]
    exit_seconds: list[float]  # per container, from SIGTERM to its exit (as the runtime recorded it)
    seconds: float  # the whole stop, podman's own work included


def runtime_timestamp(value: str) -> float:
    """Podman's `2026-12-01T23:17:33.088709178Z` (nanoseconds) as a POSIX time."""
    whole, _, fraction = value.rstrip("Z").partition(".")
    parsed = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return parsed.timestamp() + float(f"0.{fraction or 0}")


def play_down(play: Play, env: Mapping[str, str]) -> Stopped:
    """Stop as the kubelet does: SIGTERM, up to the manifest's grace period, then SIGKILL; then
    remove the pod and what was made for it."""
    started = time.monotonic()
    signalled_at: dict[str, float] = {}
    for container in play.containers:
        signalled_at[container] = time.time()
        run([podman(), "stop", "--time", str(play.grace_seconds), container],
            timeout=play.grace_seconds + 60, env=env, check=False)  # fmt: skip
    for pod in play.pods:  # the infra container
        run([podman(), "pod", "stop", "--time", "0", pod], timeout=60, env=env, check=False)
    seconds = time.monotonic() - started
    codes, exit_seconds = [], []
    for container in play.containers:
        try:
            state = container_state(container, env)
        except KubePlayError:
            codes.append(-1)
            exit_seconds.append(float("nan"))
            continue
        codes.append(int(state["ExitCode"]))
        exit_seconds.append(runtime_timestamp(state["FinishedAt"]) - signalled_at[container])
    run([podman(), "kube", "down", play.manifest], timeout=60, env=env, check=False)
    for volume in play.volumes:
        run([podman(), "volume", "rm", "--force", volume], timeout=60, env=env, check=False)
    for directory in play.secret_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    return Stopped(codes, exit_seconds, seconds)


# --- the image ------------------------------------------------------------------------------


def local_reference(image: str) -> str:
    """`asgi-deploy:0.1.0` as podman stores a local build of it: `localhost/asgi-deploy:0.1.0`."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"localhost/{image}"


def image_exists(image: str, env: Mapping[str, str]) -> bool:
    return run([podman(), "image", "exists", image], timeout=60, env=env, check=False).returncode == 0


def dockerfile_base_image() -> str:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("ARG BASE_IMAGE="):
            return line.split("=", 1)[1].strip()
    raise KubePlayError(f"no `ARG BASE_IMAGE=` in {DOCKERFILE}")


# What the Dockerfile copies into the image (.dockerignore's allow-list): an edit to any of them
# makes an image built before it stale.
IMAGE_SOURCES = ("pyproject.toml", "uv.lock", "README.md", "service", "deploy")


def newest_source(root: Path = REPO_ROOT) -> tuple[float, Path]:
    """The last modification time among the image's sources, and the file it belongs to."""
    newest = (0.0, root)
    for name in IMAGE_SOURCES:
        path = root / name
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        for file in files:
            if "__pycache__" not in file.parts:
                newest = max(newest, (file.stat().st_mtime, file))
    return newest


def go_timestamp(value: str) -> float:
    """Go's time as podman prints it, `2026-12-05 07:20:11.123456789 +0100 CET`, as a POSIX time."""
    day, clock, offset, *_ = value.split()
    whole, _, fraction = clock.partition(".")
    parsed = datetime.datetime.strptime(f"{day} {whole} {offset}", "%Y-%m-%d %H:%M:%S %z")
    return parsed.timestamp() + float(f"0.{fraction or 0}")


def image_created(image: str, env: Mapping[str, str]) -> float:
    return go_timestamp(
        run([podman(), "image", "inspect", "--format", "{{.Created}}", image], env=env).stdout
    )


def ensure_image(image: str, base_image: str | None, env: Mapping[str, str]) -> None:
    """Build `image` unless it exists and is newer than every source it is built from: on
    `base_image`, else the Dockerfile's default base when it can be pulled, else a base made
    locally with debootstrap. Says which, so an old image is never reused silently."""
    if image_exists(image, env):
        changed_at, changed = newest_source()
        if image_created(image, env) >= changed_at:
            print(f"kube-play: using {image}, built after the last change of its sources", file=sys.stderr)
            return
        print(
            f"kube-play: {image} is older than {changed.relative_to(REPO_ROOT)}: rebuilding", file=sys.stderr
        )
    base = base_image
    if base is None:
        candidates = (LOCAL_BASE_IMAGE, dockerfile_base_image())
        base = next((b for b in candidates if image_exists(b, env)), None)
    if base is None:
        default = dockerfile_base_image()
        print(f"kube-play: pulling {default}", file=sys.stderr)
        pulled = run([podman(), "pull", default], timeout=300, env=env, check=False)
        if pulled.returncode == 0:
            base = default
        else:
            print(
                f"kube-play: cannot pull {default}; making {LOCAL_BASE_IMAGE} with debootstrap",
                file=sys.stderr,
            )
            if os.geteuid() != 0:
                raise KubePlayError("building a base image with debootstrap needs root (or pass BASE_IMAGE=)")
            require("debootstrap", "apt-get install -y debootstrap")
            require("buildah", "apt-get install -y buildah")
            run(["bash", str(REPO_ROOT / "deploy" / "build-base-image.sh"), LOCAL_BASE_IMAGE], timeout=900)
            base = LOCAL_BASE_IMAGE
    print(f"kube-play: building {image} on {base}", file=sys.stderr)
    run(
        [
            podman(), "build", "--isolation", "chroot", "--layers", "--quiet",
            "-f", str(DOCKERFILE), "--build-arg", f"BASE_IMAGE={base}", "-t", image, str(REPO_ROOT),
        ],
        timeout=900,
        env=env,
    )  # fmt: skip


# --- command line ---------------------------------------------------------------------------


def clone_name(deployment: str, root: Path = REPO_ROOT) -> str:
    """The Deployment's name, made unique to this clone: two clones on one host never collide."""
    return f"{deployment}-{hashlib.sha256(str(root).encode()).hexdigest()[:6]}"


def free_port_from(first: int, tries: int = 100) -> int:
    """The first port from `first` on that nothing listens on at 127.0.0.1."""
    for port in range(first, first + tries):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise KubePlayError(f"no free port on {LOOPBACK} from {first} to {first + tries - 1} (pass --port)")


def pod_names(play: Play, env: Mapping[str, str]) -> list[str]:
    """The names podman gave the played pods (`podman pod ps` shows these, not the Deployment's)."""
    return [
        run([podman(), "pod", "inspect", "--format", "{{.Name}}", pod], env=env).stdout.strip()
        for pod in play.pods
    ]


def up(args: argparse.Namespace) -> None:
    state_dir: Path = args.state_dir
    state_file = state_dir / "play.json"
    if state_file.exists():
        raise KubePlayError(f"a deployment is already played ({state_file}): run `make kube-down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    env = podman_env(state_dir)
    args.image = local_reference(args.image)
    ensure_image(args.image, args.base_image, env)
    objects = render(args.overlay, args.component)
    secrets = {}
    for path in args.secret:
        secret = yaml.safe_load(Path(path).read_text())
        secrets[secret["metadata"]["name"]] = secret
    port = args.port if args.port is not None else free_port_from(DEFAULT_PORT)
    name = clone_name(only(objects, "Deployment")["metadata"]["name"])
    played, play = for_podman(
        objects, image=args.image, host_ports={"http": port}, workdir=state_dir, name=name, secrets=secrets
    )
    play_up(played, play, env)
    play.save(state_file)
    probe = app_container(only(objects, "Deployment"))["startupProbe"]["httpGet"]
    seconds = wait_answering(play, probe["path"], probe["port"], env, timeout=90)
    skipped = sorted({obj["kind"] for obj in objects} - set(PLAYED_KINDS))
    pods = ", ".join(pod_names(play, env))
    print(f"kube-play: {args.overlay} ready in {seconds:.1f}s at {play.base_url}/ (pod {pods})")
    print(f"kube-play: not played (no podman equivalent): {', '.join(skipped)}")
    print(f"kube-play: logs: podman logs -f {play.containers[0][:12]}   stop: make kube-down")


def down(args: argparse.Namespace) -> None:
    state_file: Path = args.state_dir / "play.json"
    if not state_file.exists():
        raise KubePlayError(f"nothing is played ({state_file} does not exist)")
    play = Play.load(state_file)
    stopped = play_down(play, podman_env(args.state_dir))
    state_file.unlink()
    Path(play.manifest).unlink(missing_ok=True)
    codes = ", ".join(map(str, stopped.exit_codes))
    print(f"kube-down: {play.name} stopped in {stopped.seconds:.1f}s (exit status {codes})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.kube_play", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".kube-play")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="build if needed, render, play and wait for the pod")
    up_parser.add_argument("overlay")
    up_parser.add_argument("--image", default="asgi-deploy:0.1.0", help="built here if missing")
    up_parser.add_argument("--base-image", default=None)
    up_parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"host port on 127.0.0.1 (default: the first free from {DEFAULT_PORT})",
    )
    up_parser.add_argument("--component", action="append", default=[], help="k8s/components/NAME")
    up_parser.add_argument("--secret", action="append", default=[], help="a Secret manifest the pod mounts")
    commands.add_parser("down", help="stop the played pod (SIGTERM, grace period) and remove it")
    args = parser.parse_args(argv)
    try:
        up(args) if args.command == "up" else down(args)
    except KubePlayError as error:
        print(f"kube-play: {error}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as error:
        print(f"kube-play: {' '.join(map(str, error.cmd))} timed out after {error.timeout}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
