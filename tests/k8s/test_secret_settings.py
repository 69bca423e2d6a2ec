"""The secret-settings component's README, followed literally: its overlay rendered, its
`kubectl create secret` run, the Secret laid out as the kubelet mounts it, and the real
service started from the rendered settings sends the header to an OTLP receiver."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devkit.process import running_server
from service.settings import Settings
from service.settings_problems import DEFAULT_SECRETS_DIR
from tests.k8s import checks
from tests.k8s.tools import K8S_DIR, render
from tests.support.otlp import otlp_receiver
from tests.support.secrets import kubelet_secret_volume

README = K8S_DIR / "components" / "secret-settings" / "README.md"
TOKEN = "e2e-7Qm2xT9v"  # noqa: S105 - a made-up token, to look for
FENCED = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


def readme_block(lang: str, containing: str) -> str:
    for match in FENCED.finditer(README.read_text()):
        body = textwrap.dedent(match["body"])
        if match["lang"] == lang and containing in body:
            return body
    raise AssertionError(f"{README}: no {lang} block with {containing!r}")


def create_secret(kubectl: str, workdir: Path) -> dict[str, Any]:
    """The README's shell block, run as written, with a `kubectl` that only prints what it
    would create (no cluster here)."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "kubectl"
    wrapper.write_text(f'#!/bin/sh\nexec {kubectl} "$@" --dry-run=client -o yaml\n')
    wrapper.chmod(0o755)
    result = subprocess.run(
        ["bash", "-euc", readme_block("sh", "create secret generic")],
        cwd=workdir,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OTLP_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret = yaml.safe_load(result.stdout)
    assert secret["kind"] == "Secret"
    return dict(secret)


def render_readme_overlay(kubectl: str, workdir: Path) -> list[dict[str, Any]]:
    """A copy of k8s/ with the README's overlay written where its `kubectl apply -k` looks."""
    applied = re.search(r"kubectl apply -k (\S+?)`", README.read_text())
    assert applied, "the README says where the overlay lives"
    tree = workdir / "repo"
    shutil.copytree(K8S_DIR, tree / "k8s")
    overlay = tree / applied[1]
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(readme_block("yaml", "kind: Kustomization"))
    return render(overlay, kubectl)


@pytest.mark.smoke
def test_the_readme_configures_the_exporter_header(kubectl: str, tmp_path: Path) -> None:
    secret = create_secret(kubectl, tmp_path)
    objs = render_readme_overlay(kubectl, tmp_path)
    (deployment,) = checks.of_kind(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "app"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if "secret" in volumes[m["name"]]]
    source = volumes[mount["name"]]["secret"]

    # The Secret the README creates is the one the pod mounts, where the settings look.
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        source["secretName"],
        deployment["metadata"]["namespace"],
    )
    assert mount["mountPath"] == str(DEFAULT_SECRETS_DIR)
    env = checks.effective_env(objs, container)
    assert "APP_SECRETS_DIR" not in env
    assert env["APP_OTLP_ENDPOINT"].startswith("https://")
    assert checks.check_settings(objs, Settings) == []
    files = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    volume = kubelet_secret_volume(tmp_path / "mounted", files, mode=source.get("defaultMode", 0o644))

    with otlp_receiver() as receiver:
        # What only a cluster provides is replaced: a loopback bind (launched() sets it),
        # the local receiver for the collector's address, the mount's path, one worker.
        local = {
            **{k: v for k, v in env.items() if k not in ("APP_HOST", "APP_PORT")},
            "APP_OTLP_ENDPOINT": receiver.endpoint,
            "APP_SECRETS_DIR": str(volume),
            "APP_WORKERS": "1",
        }
        with running_server(env["APP_SERVER"], local) as server:
            assert httpx.get(f"{server.base_url}/").status_code == 200
            server.signal(signal.SIGTERM)  # the lifespan shutdown flushes the batch
            server.wait_exit(timeout=30)
            log = server.log()
    assert receiver.exports, "no export arrived"
    assert {export.headers.get("authorization") for export in receiver.exports} == {f"Bearer {TOKEN}"}
    assert TOKEN not in log
