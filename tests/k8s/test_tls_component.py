"""The tls component: the Secret's files where the settings look for them, and probes that speak HTTPS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pytest

from service.settings import load_settings

Objects = list[dict[str, Any]]


def _deployment_and_settings(objects: Objects) -> tuple[dict[str, Any], dict[str, str]]:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [config_map] = [o for o in objects if o["kind"] == "ConfigMap" and "settings" in o["metadata"]["name"]]
    return deployment, config_map["data"]


def _mounted_secret_files(deployment: dict[str, Any], secret: str) -> set[PurePosixPath]:
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret}
    [app] = pod["containers"]
    return {
        PurePosixPath(mount["mountPath"]) / key
        for mount in app["volumeMounts"]
        if mount["name"] in volumes
        for key in ("tls.crt", "tls.key")  # a kubernetes.io/tls Secret's keys
    }


@pytest.mark.parametrize("variant", ["uvicorn+tls", "granian+tls"])
def test_the_settings_name_the_mounted_secret_files_and_every_probe_speaks_https(
    variant: str, render_variant: Callable[[str], Objects], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, settings = _deployment_and_settings(render_variant(variant))
    files = _mounted_secret_files(deployment, "asgi-deploy-tls")
    assert PurePosixPath(settings["APP_TLS_CERT_FILE"]) in files
    assert PurePosixPath(settings["APP_TLS_KEY_FILE"]) in files
    [app] = deployment["spec"]["template"]["spec"]["containers"]
    probes = [app[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert [probe.get("scheme") for probe in probes] == ["HTTPS"] * 3
    # The ConfigMap is a valid set of settings as a pod reads it (the files are checked at start-up).
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    loaded = load_settings(env_file=None)
    assert loaded.tls_cert_file is not None
    assert loaded.tls_client_ca_file is None  # the kubelet's probes present no client certificate


def test_without_the_component_the_probes_stay_http(render_variant: Callable[[str], Objects]) -> None:
    deployment, settings = _deployment_and_settings(render_variant("uvicorn"))
    assert "APP_TLS_CERT_FILE" not in settings
    [app] = deployment["spec"]["template"]["spec"]["containers"]
    assert app["readinessProbe"]["httpGet"].get("scheme", "HTTP") == "HTTP"
