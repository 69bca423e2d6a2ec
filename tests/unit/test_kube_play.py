"""devkit/kube_play.py's podman form of the rendered manifests, without podman: only what a single
host needs may change, and the change is exactly the documented one."""

from __future__ import annotations

import base64
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from devkit import kube_play
from devkit.kube_play import (
    KubePlayError,
    app_container,
    for_podman,
    local_reference,
    only,
    pod_spec,
    render,
    runtime_timestamp,
    secret_files,
)

SECRET: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "asgi-deploy-secrets"},
    "data": {"otel_service_name": base64.b64encode(b"encoded").decode()},
    "stringData": {"log_level": "warning"},
}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render("gunicorn", ["secret-settings"])


def test_only_the_deployment_and_its_configmap_are_played(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    played, play = for_podman(
        rendered,
        image="localhost/x:1",
        host_ports={"http": 18080},
        workdir=tmp_path,
        secrets={"asgi-deploy-secrets": SECRET},
    )
    assert [obj["kind"] for obj in played] == ["ConfigMap", "Deployment"]
    assert only(played, "ConfigMap") == only(rendered, "ConfigMap")
    assert play.grace_seconds == pod_spec(only(rendered, "Deployment"))["terminationGracePeriodSeconds"]


def test_changes_are_the_documented_ones(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    played, play = for_podman(
        rendered,
        image="localhost/x:1",
        host_ports={"http": 18080},
        workdir=tmp_path,
        name="pod-a",
        secrets={"asgi-deploy-secrets": SECRET},
    )
    before, after = only(rendered, "Deployment"), only(played, "Deployment")
    container = app_container(after)
    assert container["image"] == "localhost/x:1"
    assert container["ports"] == [
        {**app_container(before)["ports"][0], "hostIP": "127.0.0.1", "hostPort": 18080}
    ]
    # Everything the pod runs with is the manifest's.
    for key in ("securityContext", "envFrom", "resources", "startupProbe", "readinessProbe", "livenessProbe"):
        assert container[key] == app_container(before)[key]
    assert pod_spec(after)["securityContext"] == pod_spec(before)["securityContext"]
    volumes = {v["name"]: v for v in pod_spec(after)["volumes"]}
    assert volumes["pod-a-tmp"]["emptyDir"] == {"sizeLimit": "64Mi"}
    assert play.volumes == ["pod-a-tmp"]
    directory = Path(volumes["secret-settings"]["hostPath"]["path"])
    assert play.secret_dirs == [str(directory)]
    assert (directory / "otel_service_name").read_bytes() == b"encoded"
    assert (directory / "log_level").read_bytes() == b"warning"
    assert stat.S_IMODE((directory / "log_level").stat().st_mode) == 0o440
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/tmp"]["name"] == "pod-a-tmp"  # noqa: S108 - the mount path, not a file
    assert mounts["/run/secrets"] == {
        "name": "secret-settings",
        "mountPath": "/run/secrets",
        "readOnly": True,
    }


def test_a_mounted_secret_must_be_given(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(KubePlayError, match="asgi-deploy-secrets"):
        for_podman(rendered, image="x", host_ports={"http": 1}, workdir=tmp_path)


def test_an_unknown_overlay_names_the_allowed_ones() -> None:
    with pytest.raises(KubePlayError, match="allowed: granian, gunicorn"):
        render("nginx")


def test_secret_files_decode_data_and_keep_string_data() -> None:
    assert secret_files(SECRET) == {"otel_service_name": b"encoded", "log_level": b"warning"}


@pytest.mark.parametrize(
    ("image", "local"),
    [
        ("asgi-deploy:0.1.0", "localhost/asgi-deploy:0.1.0"),
        ("team/asgi-deploy:1", "localhost/team/asgi-deploy:1"),
        ("localhost/asgi-deploy:1", "localhost/asgi-deploy:1"),
        ("registry.example.com/asgi-deploy:1", "registry.example.com/asgi-deploy:1"),
    ],
)
def test_local_reference(image: str, local: str) -> None:
    assert local_reference(image) == local


def test_runtime_timestamp_keeps_sub_second_precision() -> None:
    assert runtime_timestamp("1970-01-01T00:00:01.500000000Z") == pytest.approx(1.5)


def test_each_clone_plays_a_pod_of_its_own_name(tmp_path: Path) -> None:
    first, second = (
        kube_play.clone_name("asgi-deploy", tmp_path / "a"),
        kube_play.clone_name("asgi-deploy", tmp_path / "b"),
    )
    assert first.startswith("asgi-deploy-")
    assert first != second
    assert first == kube_play.clone_name("asgi-deploy", tmp_path / "a")


def test_the_default_port_is_the_first_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert kube_play.free_port_from(port) > port


def test_an_image_is_stale_once_a_source_changes(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        (tmp_path / name).write_text("")
    (tmp_path / "service" / "__pycache__").mkdir(parents=True)
    (tmp_path / "deploy").mkdir()
    app = tmp_path / "service" / "app.py"
    app.write_text("")
    os.utime(app, (2_000_000_000, 2_000_000_000))
    compiled = tmp_path / "service" / "__pycache__" / "app.pyc"
    compiled.write_text("")
    os.utime(compiled, (2_100_000_000, 2_100_000_000))  # never part of the image
    assert kube_play.newest_source(tmp_path) == (2_000_000_000, app)


def test_an_image_creation_time_keeps_its_offset_and_fraction() -> None:
    utc = kube_play.go_timestamp("2026-12-05 07:20:11.5 +0000 UTC")
    assert kube_play.go_timestamp("2026-12-05 08:20:11.5 +0100 CET") == utc
    assert utc == 1796455211.5
