"""Every overlay renders, validates against the oldest and newest supported
Kubernetes schemas, and agrees with the app, its settings and its image.
Each check is also fed a broken copy, to show that it can fail."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.k8s import checks
from tests.k8s.tools import DOCKERFILE, K8S_DIR, NEWEST_K8S, OLDEST_K8S, OVERLAYS, RenderError, render

Objects = list[dict[str, Any]]

pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")


@pytest.fixture(scope="module")
def settings_class() -> type[Any]:
    from service.settings import Settings

    return Settings


@pytest.fixture(scope="module")
def app_paths(settings_class: type[Any]) -> set[str]:
    from service.app import create_app

    app = create_app(settings_class(_env_file=None, _secrets_dir=None))
    # The routes the app documents (the schema is built even with docs off), plus
    # every route, documented or not (/metrics is not), found by route_paths.
    return set(app.openapi()["paths"]) | route_paths(app.routes)


def route_paths(routes: Any, prefix: str = "") -> set[str]:
    """Paths of routes, flat (older FastAPI) or behind included routers (FastAPI
    0.16x keeps each include_router as one route holding the original router)."""
    paths = set()
    for route in routes:
        if isinstance(getattr(route, "path", None), str):
            paths.add(prefix + route.path)
        elif hasattr(route, "original_router"):
            context = getattr(route, "include_context", None)
            paths |= route_paths(route.original_router.routes, prefix + getattr(context, "prefix", ""))
    return paths


def test_probe_endpoints_answer(settings_class: type[Any]) -> None:
    """The probe endpoints are real: 200 once the app has started."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(settings_class(_env_file=None, _secrets_dir=None))
    with TestClient(app) as client:
        for path in ("/healthz", "/readyz"):
            assert client.get(path).status_code == 200, path


@pytest.fixture(scope="module")
def defaults(settings_class: type[Any]) -> dict[str, Any]:
    fields = settings_class.model_fields
    return {"port": fields["port"].default, "graceful_timeout": fields["graceful_timeout"].default}


def deployment(objs: Objects) -> dict[str, Any]:
    return checks.of_kind(objs, "Deployment")[0]


def app_container(objs: Objects) -> dict[str, Any]:
    return deployment(objs)["spec"]["template"]["spec"]["containers"][0]


def configmap_data(objs: Objects) -> dict[str, str]:
    return checks.of_kind(objs, "ConfigMap")[0]["data"]


# --- every variant passes every check ---------------------------------------------


@pytest.mark.parametrize("version", [OLDEST_K8S, NEWEST_K8S])
def test_schema(rendered: Objects, version: str) -> None:
    assert checks.check_schema(rendered, version) == []


def test_probes(rendered: Objects, app_paths: set[str]) -> None:
    assert {"/healthz", "/readyz"} <= app_paths
    assert checks.check_probes(rendered, app_paths) == []


def test_ports(rendered: Objects, defaults: dict[str, Any]) -> None:
    assert checks.check_ports(rendered, defaults["port"]) == []


def test_shutdown_budget(rendered: Objects, defaults: dict[str, Any]) -> None:
    assert checks.check_shutdown_budget(rendered, defaults["graceful_timeout"]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_server_closes_an_idle_connection_before_the_ingress(
    overlay: str, render_variant: Callable[[str], Objects], settings_class: type[Any]
) -> None:
    assert checks.check_keepalive(render_variant(f"{overlay}+ingress"), settings_class) == []


def test_keepalive_check_catches_a_server_that_closes_first(
    render_variant: Callable[[str], Objects], settings_class: type[Any]
) -> None:
    objs = render_variant("uvicorn+ingress")
    configmap_data(objs)["APP_KEEPALIVE_TIMEOUT"] = "5"
    assert any("after 5 s (timeout_keep_alive)" in p for p in checks.check_keepalive(objs, settings_class))
    objs = render_variant("hypercorn+ingress")
    configmap_data(objs)["APP_REQUEST_HEAD_TIMEOUT"] = "10"
    problems = checks.check_keepalive(objs, settings_class)
    assert any("raise APP_KEEPALIVE_TIMEOUT and APP_REQUEST_HEAD_TIMEOUT" in p for p in problems), problems
    assert checks.check_keepalive([o for o in objs if o["kind"] != "Ingress"], settings_class) == []


def test_settings(rendered: Objects, settings_class: type[Any]) -> None:
    assert checks.check_settings(rendered, settings_class) == []


def test_run_as_image_user(rendered: Objects) -> None:
    image_user = checks.dockerfile_user(DOCKERFILE.read_text())
    assert image_user == (10001, 10001)
    assert checks.check_run_as(rendered, image_user) == []


def test_hardening(rendered: Objects) -> None:
    assert checks.check_hardening(rendered) == []


def test_scaling(rendered: Objects) -> None:
    assert checks.check_scaling(rendered) == []


def test_metrics_endpoint_answers_private_scrapers_only(settings_class: type[Any]) -> None:
    """/metrics exists, answers a scraper on a pod network (the default allow-list) and
    refuses a public address."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(settings_class(_env_file=None, _secrets_dir=None))
    for client, status in ((("10.244.0.7", 50000), 200), (("203.0.113.5", 50000), 403)):
        with TestClient(app, client=client) as scraper:
            assert scraper.get("/metrics").status_code == status, client


def test_service_monitors(rendered: Objects, app_paths: set[str]) -> None:
    assert "/metrics" in app_paths
    assert checks.check_service_monitors(rendered, app_paths) == []


def test_service_monitor_component_scrapes_metrics(monitored: Objects) -> None:
    """The component adds exactly one ServiceMonitor, with the documented settings,
    and the schema check skips it (a CRD) rather than failing."""
    (monitor,) = checks.of_kind(monitored, "ServiceMonitor")
    assert checks.type_of(monitor) in checks.CRD_KINDS
    assert (
        monitor["metadata"]["namespace"] == checks.of_kind(monitored, "Service")[0]["metadata"]["namespace"]
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "scheme": "http", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert checks.check_schema(monitored, NEWEST_K8S) == []


def test_overlays_select_their_server(render_variant: Any) -> None:
    for server in ("uvicorn", "hypercorn", "gunicorn"):
        assert configmap_data(render_variant(server))["APP_SERVER"] == server


def test_worker_memory_fits_the_container(rendered: Objects) -> None:
    assert checks.check_worker_memory(rendered) == []


def test_workers_follow_the_cpu_limit(rendered: Objects) -> None:
    """APP_WORKERS stays unset: the settings derive it from the CPU limit."""
    assert "APP_WORKERS" not in checks.effective_env(rendered, app_container(rendered))
    assert "cpu" in app_container(rendered)["resources"]["limits"]


# --- each check fails on a broken copy ----------------------------------------------


def test_kustomize_fails_on_a_broken_kustomization(tmp_path: Path, kubectl: str) -> None:
    shutil.copytree(K8S_DIR, tmp_path / "k8s")
    base = tmp_path / "k8s" / "base" / "kustomization.yaml"
    base.write_text(base.read_text().replace("- hpa.yaml", "- hpa-missing.yaml"))
    with pytest.raises(RenderError, match="hpa-missing"):
        render(tmp_path / "k8s" / "overlays" / "uvicorn", kubectl)


@pytest.mark.parametrize("version", [OLDEST_K8S, NEWEST_K8S])
def test_schema_catches_a_misspelt_field(broken: Objects, version: str) -> None:
    app_container(broken)["readinesProbe"] = app_container(broken).pop("readinessProbe")
    assert any("readinesProbe" in p for p in checks.check_schema(broken, version))


def test_schema_catches_a_wrong_type(broken: Objects) -> None:
    app_container(broken)["ports"][0]["containerPort"] = "8000"
    assert checks.check_schema(broken, OLDEST_K8S)


def test_schema_catches_a_field_newer_than_the_oldest_version(broken: Objects) -> None:
    # `resources` at pod level arrived in Kubernetes 1.32 (PodLevelResources).
    deployment(broken)["spec"]["template"]["spec"]["resources"] = {"limits": {"cpu": "1"}}
    assert checks.check_schema(broken, OLDEST_K8S)


def test_probes_catch_a_path_the_app_lacks(broken: Objects, app_paths: set[str]) -> None:
    app_container(broken)["readinessProbe"]["httpGet"]["path"] = "/ready"
    assert any("/ready'" in p for p in checks.check_probes(broken, app_paths))


def test_probes_catch_liveness_on_the_readiness_endpoint(broken: Objects, app_paths: set[str]) -> None:
    app_container(broken)["livenessProbe"]["httpGet"]["path"] = "/readyz"
    assert any("same path" in p for p in checks.check_probes(broken, app_paths))


def test_probes_catch_a_missing_probe_and_an_unknown_port(broken: Objects, app_paths: set[str]) -> None:
    del app_container(broken)["startupProbe"]
    app_container(broken)["livenessProbe"]["httpGet"]["port"] = "metrics"
    problems = checks.check_probes(broken, app_paths)
    assert any("no startupProbe" in p for p in problems)
    assert any("'metrics'" in p for p in problems)


def test_ports_catch_a_service_target_the_pod_lacks(broken: Objects, defaults: dict[str, Any]) -> None:
    checks.of_kind(broken, "Service")[0]["spec"]["ports"][0]["targetPort"] = "web"
    assert any("targetPort 'web'" in p for p in checks.check_ports(broken, defaults["port"]))


def test_ports_catch_app_port_off_the_container_port(broken: Objects, defaults: dict[str, Any]) -> None:
    configmap_data(broken)["APP_PORT"] = "9000"
    assert any("APP_PORT=9000" in p for p in checks.check_ports(broken, defaults["port"]))


def test_ports_catch_a_selector_that_matches_nothing(broken: Objects, defaults: dict[str, Any]) -> None:
    checks.of_kind(broken, "Service")[0]["spec"]["selector"]["app.kubernetes.io/name"] = "other"
    assert any("matches no pod" in p for p in checks.check_ports(broken, defaults["port"]))


def test_worker_memory_catches_workers_that_outgrow_the_container(broken: Objects) -> None:
    configmap_data(broken)["APP_MAX_WORKER_MEMORY"] = "300"  # 1 worker: 300 + 128 > 384Mi
    assert any("over the memory limit 384Mi" in p for p in checks.check_worker_memory(broken))
    configmap_data(broken)["APP_WORKERS"] = "3"
    configmap_data(broken)["APP_MAX_WORKER_MEMORY"] = "100"  # 3 x 100 + 128 > 384
    assert any("3 workers" in p for p in checks.check_worker_memory(broken))


def test_worker_memory_catches_no_limit(broken: Objects) -> None:
    del configmap_data(broken)["APP_MAX_WORKER_MEMORY"]
    assert any("APP_MAX_WORKER_MEMORY is unset" in p for p in checks.check_worker_memory(broken))


def test_shutdown_budget_catches_a_short_grace_period(broken: Objects, defaults: dict[str, Any]) -> None:
    configmap_data(broken)["APP_GRACEFUL_TIMEOUT"] = "60"
    problems = checks.check_shutdown_budget(broken, defaults["graceful_timeout"])
    assert any("terminationGracePeriodSeconds=35" in p for p in problems)


def test_shutdown_budget_counts_the_drain_window(broken: Objects, defaults: dict[str, Any]) -> None:
    configmap_data(broken)["APP_DRAIN_SECONDS"] = "15"
    problems = checks.check_shutdown_budget(broken, defaults["graceful_timeout"])
    assert any("APP_DRAIN_SECONDS 15" in p for p in problems)


def test_shutdown_budget_catches_a_missing_prestop(broken: Objects, defaults: dict[str, Any]) -> None:
    del app_container(broken)["lifecycle"]
    assert any("no preStop" in p for p in checks.check_shutdown_budget(broken, defaults["graceful_timeout"]))


def test_shutdown_budget_reads_an_exec_sleep(broken: Objects) -> None:
    app_container(broken)["lifecycle"]["preStop"] = {"exec": {"command": ["sleep", "12"]}}
    assert checks.prestop_seconds(app_container(broken)) == 12


def test_settings_catch_an_unknown_key(broken: Objects, settings_class: type[Any]) -> None:
    configmap_data(broken)["APP_WORKER"] = "2"
    assert any("APP_WORKER is not a field" in p for p in checks.check_settings(broken, settings_class))


def test_settings_catch_a_secret_in_the_configmap(broken: Objects, settings_class: type[Any]) -> None:
    configmap_data(broken)["APP_OTLP_HEADERS"] = "authorization=Bearer leaked"
    problems = checks.check_settings(broken, settings_class)
    assert any("APP_OTLP_HEADERS is a secret; mount it as a file" in p for p in problems)
    assert not any("leaked" in p for p in problems)


def test_settings_check_the_names_of_secret_references(broken: Objects, settings_class: type[Any]) -> None:
    app_container(broken)["env"] = [
        {"name": "APP_OTLP_HEADERS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "otlp_headers"}}},
        {"name": "APP_OTLP_HEADER", "valueFrom": {"secretKeyRef": {"name": "s", "key": "otlp_headers"}}},
    ]
    problems = checks.check_settings(broken, settings_class)
    assert [p for p in problems if "APP_OTLP_HEADER" in p] == [
        "Deployment/asgi-deploy container app: APP_OTLP_HEADER is not a field of Settings"
    ]


def test_settings_catch_an_invalid_value(broken: Objects, settings_class: type[Any]) -> None:
    configmap_data(broken)["APP_SERVER"] = "daphne"
    configmap_data(broken)["APP_GRACEFUL_TIMEOUT"] = "0"
    problems = checks.check_settings(broken, settings_class)
    assert any("server" in p for p in problems)
    assert any("graceful_timeout" in p for p in problems)


def test_run_as_catches_a_uid_mismatch(broken: Objects) -> None:
    deployment(broken)["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 1000
    assert checks.check_run_as(broken, (10001, 10001))


def test_run_as_catches_a_root_or_named_image_user(broken: Objects) -> None:
    assert checks.dockerfile_user("FROM a AS b\nUSER 10001\nFROM c\nUSER app\n") is None
    assert checks.check_run_as(broken, None)
    assert checks.dockerfile_user("FROM a\nUSER 0:0\n") == (0, 0)
    assert any("root" in p for p in checks.check_run_as(broken, (0, 0)))


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("securityContext", "readOnlyRootFilesystem"), False, "readOnlyRootFilesystem"),
        (("securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation"),
        (("securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "drop ALL"),
        (("resources", "limits"), {"memory": "1Gi"}, "limits.cpu"),
        (("image",), "asgi-deploy:latest", "not pinned"),
        (("volumeMounts",), [], checks.TMP_PATH),
    ],
)
def test_hardening_catches_a_weakened_container(
    broken: Objects, path: tuple[str, ...], value: object, expected: str
) -> None:
    target = app_container(broken)
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert any(expected in p for p in checks.check_hardening(broken))


def test_hardening_catches_service_links(broken: Objects) -> None:
    deployment(broken)["spec"]["template"]["spec"]["enableServiceLinks"] = True
    assert any("enableServiceLinks" in p for p in checks.check_hardening(broken))


def test_scaling_catches_replicas_and_missing_budget(broken: Objects) -> None:
    deployment(broken)["spec"]["replicas"] = 3
    broken[:] = [o for o in broken if o["kind"] != "PodDisruptionBudget"]
    problems = checks.check_scaling(broken)
    assert any("sets replicas" in p for p in problems)
    assert any("no PodDisruptionBudget" in p for p in problems)


# --- custom resources: the schema check skips only listed kinds; ServiceMonitor shape ---


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("monitoring.coreos.com/v1alpha1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor")],
)
def test_schema_fails_on_an_unlisted_custom_kind(monitored: Objects, api_version: str, kind: str) -> None:
    (monitor,) = checks.of_kind(monitored, "ServiceMonitor")
    monitor.update(apiVersion=api_version, kind=kind)
    assert any(
        f"{kind}/asgi-deploy" in p and "no schema" in p for p in checks.check_schema(monitored, NEWEST_K8S)
    )


def test_duration_seconds() -> None:
    assert checks.duration_seconds("30s") == 30
    assert checks.duration_seconds("1m30s") == 90
    assert checks.duration_seconds("500ms") == 0.5
    for bad in ("30", "30 s", "s", "", "1.5s", 30, None):
        assert checks.duration_seconds(bad) is None, bad


def _monitor(objs: Objects) -> dict[str, Any]:
    return checks.of_kind(objs, "ServiceMonitor")[0]


def _endpoint(objs: Objects) -> dict[str, Any]:
    return _monitor(objs)["spec"]["endpoints"][0]


def _labels(objs: Objects) -> dict[str, str]:
    return _monitor(objs)["spec"]["selector"]["matchLabels"]


BROKEN_MONITORS = [
    pytest.param(lambda o: _monitor(o).update(apiVersion="monitoring.coreos.com/v2"), "apiVersion", id="api"),
    pytest.param(
        lambda o: _labels(o).update({"app.kubernetes.io/name": "x"}), "matches no Service", id="label"
    ),
    pytest.param(
        lambda o: _labels(o).update({"asgi-deploy/server": "uvicorn"}), "identity labels", id="non-id"
    ),
    pytest.param(
        lambda o: _monitor(o)["spec"].update(selector={}), "non-empty matchLabels", id="no-selector"
    ),
    pytest.param(
        lambda o: _monitor(o)["spec"].update(namespaceSelector={"matchNames": ["monitoring"]}),
        "matches no Service",
        id="namespace-selector",
    ),
    pytest.param(
        lambda o: _monitor(o)["metadata"].update(namespace="monitoring"), "matches no Service", id="namespace"
    ),
    pytest.param(lambda o: _monitor(o)["spec"].update(endpoints=[]), "no endpoints", id="no-endpoints"),
    pytest.param(lambda o: _endpoint(o).update(port="metrics"), "'metrics' is not a named port", id="port"),
    pytest.param(lambda o: _endpoint(o).update(port=8000), "no Service port name", id="port-number"),
    pytest.param(
        lambda o: checks.of_kind(o, "Service")[0]["spec"]["ports"][0].pop("name"),
        "'http' is not a named port",
        id="unnamed-service-port",
    ),
    pytest.param(lambda o: _endpoint(o).update(path="/metric"), "'/metric' is not a route", id="path"),
    pytest.param(lambda o: _endpoint(o).update(scheme="https"), "scheme 'https'", id="scheme"),
    pytest.param(
        lambda o: _endpoint(o).update(scrapeTimeout="1m"), "exceeds interval", id="timeout>interval"
    ),
    pytest.param(lambda o: _endpoint(o).update(interval="30"), "interval '30'", id="bad-duration"),
    pytest.param(lambda o: _endpoint(o).pop("scrapeTimeout"), "scrapeTimeout None", id="no-timeout"),
    pytest.param(
        lambda o: configmap_data(o).update(APP_METRICS_ENABLED="False"),
        "APP_METRICS_ENABLED=False",
        id="metrics-off",
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), BROKEN_MONITORS)
def test_service_monitor_check_catches_a_broken_monitor(
    monitored: Objects, app_paths: set[str], breakage: Any, expected: str
) -> None:
    assert checks.check_service_monitors(monitored, app_paths) == []
    breakage(monitored)
    problems = checks.check_service_monitors(monitored, app_paths)
    assert any(expected in p for p in problems), problems
