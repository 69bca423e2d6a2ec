"""The project's own checks on rendered manifests.

Each check takes rendered objects (and what else it compares them with) and
returns a list of problems, empty when all is well, so a test can feed it a
deliberately broken copy and see it complain.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from deploy.profile import Native, UnsupportedSettingError, lookup
from deploy.profiles import load_profile
from service.settings import ENV_PREFIX, env_name, field_name, is_secret

Obj = dict[str, Any]

# Seconds between the server's graceful timeout ending and the kubelet's SIGKILL:
# the process has to exit and the runtime to reap it.
SHUTDOWN_MARGIN_SECONDS = 5
# The WebSocket close handshake at the graceful stop: the 1012 close frame goes out at its
# start, then a server waits this long at most for the peer's reply (gunicorn's ASGI worker: 5 s).
# It must fit inside APP_GRACEFUL_TIMEOUT, or the server cuts it at the deadline.
WS_CLOSE_HANDSHAKE_SECONDS = 5
POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# How long a proxy in front keeps an idle upstream connection for reuse: ingress-nginx's
# `upstream-keepalive-timeout` and the usual cloud load balancers' idle timeout, 60 s. A server
# that closes an idle connection sooner races the proxy's next request on it: sporadic 502s.
PROXY_UPSTREAM_IDLE_SECONDS = 60
# The one writable path of the read-only container: an emptyDir, not a temp file.
TMP_PATH = "/tmp"  # noqa: S108


def of_kind(objs: Iterable[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objs if obj.get("kind") == kind]


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def workloads(objs: Iterable[Obj]) -> Iterator[Obj]:
    for obj in objs:
        if obj.get("kind") in POD_KINDS:
            yield obj


def containers(workload: Obj) -> list[Obj]:
    return list(workload["spec"]["template"]["spec"].get("containers", []))


def effective_env(objs: list[Obj], container: Obj) -> dict[str, str]:
    """The container's environment from its ConfigMaps (envFrom) and literal `env` entries."""
    configmaps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in of_kind(objs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and ref.get("name") in configmaps:
            prefix = source.get("prefix", "")
            env.update({prefix + k: str(v) for k, v in configmaps[ref["name"]].items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def _port_names(container: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}


def _resolve_port(container: Obj, port: int | str) -> int | None:
    if isinstance(port, int):
        numbers = {p["containerPort"] for p in container.get("ports", [])}
        return port if port in numbers else None
    return _port_names(container).get(port)


# --- probes ---------------------------------------------------------------------


def check_probes(objs: list[Obj], app_paths: set[str]) -> list[str]:
    """Startup, readiness and liveness probes exist, hit real app routes on a declared
    port, and readiness and liveness use different endpoints."""
    problems = []
    for workload in workloads(objs):
        for container in containers(workload):
            where = f"{name_of(workload)} container {container['name']}"
            paths = {}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if not probe:
                    problems.append(f"{where}: no {kind}")
                    continue
                http = probe.get("httpGet")
                if not http:
                    problems.append(f"{where}: {kind} is not an httpGet probe")
                    continue
                paths[kind] = http.get("path", "/")
                if paths[kind] not in app_paths:
                    problems.append(
                        f"{where}: {kind} path {paths[kind]!r} is not a route of the app "
                        f"({sorted(app_paths)})"
                    )
                if _resolve_port(container, http.get("port")) is None:
                    problems.append(
                        f"{where}: {kind} port {http.get('port')!r} is not a port of the container"
                    )
            if paths.get("readinessProbe") and paths.get("readinessProbe") == paths.get("livenessProbe"):
                problems.append(
                    f"{where}: readiness and liveness probe the same path "
                    f"{paths['readinessProbe']!r}; a dependency outage would restart pods"
                )
    return problems


# --- ports ----------------------------------------------------------------------


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_ports(objs: list[Obj], default_port: int) -> list[str]:
    """Each Service selects the pods and targets a port they declare; the container
    port named `http` is the one the server binds (APP_PORT)."""
    problems = []
    pods = [(w, w["spec"]["template"]) for w in workloads(objs)]
    for workload, _template in pods:
        for container in containers(workload):
            http = _port_names(container).get("http")
            if http is None:
                problems.append(f"{name_of(workload)}: container {container['name']} has no port named http")
                continue
            bound = int(effective_env(objs, container).get("APP_PORT", default_port))
            if http != bound:
                problems.append(
                    f"{name_of(workload)}: containerPort http={http} but the server binds APP_PORT={bound}"
                )
    for service in of_kind(objs, "Service"):
        selector = service["spec"].get("selector", {})
        matched = [(w, t) for w, t in pods if _selects(selector, t["metadata"].get("labels", {}))]
        if not matched:
            problems.append(f"{name_of(service)}: selector {selector} matches no pod template")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for workload, _ in matched:
                if not any(_resolve_port(c, target) for c in containers(workload)):
                    problems.append(
                        f"{name_of(service)}: targetPort {target!r} is not a port of {name_of(workload)}"
                    )
    for policy in of_kind(objs, "NetworkPolicy"):
        selector = policy["spec"].get("podSelector", {}).get("matchLabels", {})
        if not any(_selects(selector, t["metadata"].get("labels", {})) for _, t in pods):
            problems.append(f"{name_of(policy)}: podSelector {selector} matches no pod template")
    return problems


# --- shutdown budget ----------------------------------------------------------------


def prestop_seconds(container: Obj) -> int:
    """Seconds the preStop hook holds the pod: the native sleep action or `sleep N`."""
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    words = shlex.split(" ".join(command)) if command else []
    for i, word in enumerate(words[:-1]):
        if word.endswith("sleep") and re.fullmatch(r"\d+", words[i + 1]):
            return int(words[i + 1])
    return 0


def check_shutdown_budget(objs: list[Obj], default_graceful_timeout: int) -> list[str]:
    """terminationGracePeriodSeconds covers the preStop sleep, the server's drain
    (APP_GRACEFUL_TIMEOUT) and a margin, so the kubelet never SIGKILLs a drain."""
    problems = []
    for workload in workloads(objs):
        spec = workload["spec"]["template"]["spec"]
        grace = int(spec.get("terminationGracePeriodSeconds", 30))
        for container in containers(workload):
            pre_stop = prestop_seconds(container)
            if pre_stop == 0:
                problems.append(
                    f"{name_of(workload)}: container {container['name']} has no preStop sleep; "
                    "pods would get SIGTERM while still in the Service's endpoints"
                )
            env = effective_env(objs, container)
            graceful = int(env.get("APP_GRACEFUL_TIMEOUT", default_graceful_timeout))
            # The launcher's drain window (0 by default in Kubernetes) runs before the graceful stop.
            window = int(env.get("APP_DRAIN_SECONDS", 0))
            if graceful < WS_CLOSE_HANDSHAKE_SECONDS:
                problems.append(
                    f"{name_of(workload)}: APP_GRACEFUL_TIMEOUT {graceful} < the WebSocket close "
                    f"handshake ({WS_CLOSE_HANDSHAKE_SECONDS} s): sockets would be cut, not closed"
                )
            needed = pre_stop + window + graceful + SHUTDOWN_MARGIN_SECONDS
            if grace < needed:
                problems.append(
                    f"{name_of(workload)}: terminationGracePeriodSeconds={grace} < preStop {pre_stop} "
                    f"+ APP_DRAIN_SECONDS {window} + APP_GRACEFUL_TIMEOUT {graceful} "
                    f"+ margin {SHUTDOWN_MARGIN_SECONDS} = {needed}"
                )
    return problems


# --- settings -----------------------------------------------------------------------


def check_settings(objs: list[Obj], settings_class: type[Any]) -> list[str]:
    """Every APP_* variable a container gets is a real, non-secret settings field,
    and the values together validate."""

    problems = []
    fields = settings_class.model_fields
    for workload in workloads(objs):
        for container in containers(workload):
            where = f"{name_of(workload)} container {container['name']}"
            values: dict[str, str] = {}
            for key, value in effective_env(objs, container).items():
                if not key.startswith(ENV_PREFIX):
                    continue
                field = field_name(key)
                if field not in fields:
                    problems.append(f"{where}: {key} is not a field of {settings_class.__name__}")
                    continue
                if is_secret(fields[field]):
                    problems.append(f"{where}: {key} is a secret; mount it as a file, not a ConfigMap value")
                values[field] = value
            problems += _check_references(where, container, settings_class)
            try:
                settings = settings_class(_env_file=None, _secrets_dir=None, **values)
            except ValidationError as error:
                for item in error.errors(include_url=False):
                    loc = ".".join(str(p) for p in item["loc"]) or "settings"
                    problems.append(f"{where}: invalid {loc}: {item['msg']}")
                continue
            # The chosen server must be able to honour every value (adapters refuse the rest).
            try:
                load_profile(settings.server).check(settings)
            except UnsupportedSettingError as error:
                problems.append(f"{where}: {error}")
    return problems


def container_settings(objs: list[Obj], container: Obj, settings_class: type[Any]) -> Any:
    """The settings a container's process builds from its ConfigMap and env (None if invalid)."""
    values = {
        field_name(key): value
        for key, value in effective_env(objs, container).items()
        if key.startswith(ENV_PREFIX) and field_name(key) in settings_class.model_fields
    }
    try:
        return settings_class(_env_file=None, _secrets_dir=None, **values)
    except ValidationError:
        return None  # check_settings names the problem


def check_keepalive(objs: list[Obj], settings_class: type[Any]) -> list[str]:
    """Behind the shipped Ingress, no server closes an idle connection before the proxy does.

    The idle timeout is read from the server's own config, where its profile declares that
    `APP_KEEPALIVE_TIMEOUT` lands (hypercorn's one timer is the shorter of it and the request-head
    deadline). A server that declares no idle timeout (granian) keeps idle connections until
    the proxy closes them: nothing to race.
    """
    if not of_kind(objs, "Ingress"):
        return []
    problems = []
    for workload in workloads(objs):
        for container in containers(workload):
            settings = container_settings(objs, container, settings_class)
            if settings is None:
                continue
            profile = load_profile(settings.server)
            support = profile.settings.get("keepalive_timeout")
            if not isinstance(support, Native):
                continue
            idle = lookup(profile.build(settings), support.at)
            if idle <= PROXY_UPSTREAM_IDLE_SECONDS:
                # Every setting that lands on the same timer (hypercorn: the head deadline too).
                raise_ = " and ".join(
                    env_name(name)
                    for name, other in profile.settings.items()
                    if isinstance(other, Native) and other.key == support.key
                )
                problems.append(
                    f"{name_of(workload)} container {container['name']}: {settings.server} closes idle "
                    f"connections after {idle} s ({support.key}), not above the "
                    f"{PROXY_UPSTREAM_IDLE_SECONDS} s the Ingress controller keeps them for reuse: "
                    f"raise {raise_}"
                )
    return problems


def _check_references(where: str, container: Obj, settings_class: type[Any]) -> list[str]:
    """`valueFrom` variables: their values are out of reach, but not their names and sources."""
    problems = []
    fields = settings_class.model_fields
    for item in container.get("env", []):
        key, reference = item["name"], item.get("valueFrom", {})
        if not key.startswith(ENV_PREFIX) or not reference:
            continue
        field = field_name(key)
        if field not in fields:
            problems.append(f"{where}: {key} is not a field of {settings_class.__name__}")
        elif "configMapKeyRef" in reference and is_secret(fields[field]):
            problems.append(f"{where}: {key} is a secret; mount it as a file, not a ConfigMap value")
    return problems


# --- security and scaling -------------------------------------------------------------


def dockerfile_user(text: str) -> tuple[int, int] | None:
    """UID and GID of the last USER instruction of the final stage (numeric only)."""
    stage = re.split(r"(?im)^\s*FROM\s", text)[-1]
    users = re.findall(r"(?im)^\s*USER\s+(\S+)\s*$", stage)
    if not users:
        return None
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    if not match:
        return None
    uid = int(match.group(1))
    return uid, int(match.group(2) or uid)


def check_run_as(objs: list[Obj], image_user: tuple[int, int] | None) -> list[str]:
    """Pods run as the numeric, non-root user the image creates."""
    if image_user is None:
        return ["deploy/Dockerfile: the final stage has no numeric `USER uid:gid`"]
    uid, gid = image_user
    problems = []
    if uid == 0:
        problems.append("deploy/Dockerfile: the image runs as root")
    for workload in workloads(objs):
        pod = workload["spec"]["template"]["spec"].get("securityContext", {})
        for container in containers(workload):
            ctx = {**pod, **container.get("securityContext", {})}
            where = f"{name_of(workload)} container {container['name']}"
            if ctx.get("runAsUser") != uid or ctx.get("runAsGroup") != gid:
                problems.append(
                    f"{where}: runs as {ctx.get('runAsUser')}:{ctx.get('runAsGroup')}, "
                    f"the image's user is {uid}:{gid}"
                )
    return problems


def check_hardening(objs: list[Obj]) -> list[str]:
    """The pod-level promises of k8s/base that no overlay or component may undo."""
    problems = []
    for workload in workloads(objs):
        spec = workload["spec"]["template"]["spec"]
        where = name_of(workload)
        if spec.get("enableServiceLinks") is not False:
            problems.append(f"{where}: enableServiceLinks must be false (injects *_PORT variables)")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        for container in containers(workload):
            problems += [
                f"{where} container {container['name']}: {problem}"
                for problem in _container_hardening(spec, container)
            ]
    return problems


def _container_hardening(spec: Obj, container: Obj) -> list[str]:
    problems = []
    ctx = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    expected = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    problems += [
        f"securityContext.{key} must be {value}"
        for key, value in expected.items()
        if ctx.get(key) is not value
    ]
    if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
        problems.append("capabilities must drop ALL")
    if ctx.get("capabilities", {}).get("add"):
        problems.append("adds capabilities")
    if ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile must be RuntimeDefault")
    resources = container.get("resources", {})
    problems += [
        f"no {part}.{resource}"
        for part in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in resources.get(part, {})
    ]
    image = container.get("image", "")
    tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
    if "@sha256:" not in image and tag in ("", "latest"):
        problems.append(f"image {image!r} is not pinned by tag or digest")
    tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    if mounts.get(TMP_PATH) not in tmp_volumes:
        problems.append(f"{TMP_PATH} is not an emptyDir (the root filesystem is read-only)")
    return problems


def check_scaling(objs: list[Obj]) -> list[str]:
    """The HPA alone owns the replica count, and a PDB covers the pods."""
    problems = []
    hpas = of_kind(objs, "HorizontalPodAutoscaler")
    for workload in of_kind(objs, "Deployment"):
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        if "replicas" in workload["spec"]:
            problems.append(f"{name_of(workload)}: sets replicas, which fights its HorizontalPodAutoscaler")
        targets = [
            h
            for h in hpas
            if h["spec"]["scaleTargetRef"]["name"] == name
            and h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        ]
        if not targets:
            problems.append(f"{name_of(workload)}: no HorizontalPodAutoscaler targets it")
        for hpa in targets:
            if hpa["spec"].get("minReplicas", 1) < 2:
                problems.append(f"{name_of(hpa)}: minReplicas < 2 leaves no replica during a disruption")
        pdbs = [
            p
            for p in of_kind(objs, "PodDisruptionBudget")
            if _selects(p["spec"].get("selector", {}).get("matchLabels", {}), labels)
        ]
        if not pdbs:
            problems.append(f"{name_of(workload)}: no PodDisruptionBudget selects its pods")
        for pdb in pdbs:
            if "unhealthyPodEvictionPolicy" not in pdb["spec"]:
                problems.append(f"{name_of(pdb)}: no unhealthyPodEvictionPolicy")
    return problems


# --- worker memory ---------------------------------------------------------------------

# What the container needs besides its workers: the main process (launcher, supervisor or
# arbiter), multiprocessing's resource tracker, and one replacement worker booting while the
# worker it replaces still runs (memory recycling overlaps them).
MAIN_PROCESS_RESERVE_MIB = 128
_MEMORY_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}


def memory_mib(quantity: object) -> float:
    text = str(quantity)
    for suffix, factor in _MEMORY_UNITS.items():
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    return float(text) / 2**20  # plain bytes


def cpu_count(quantity: object) -> int:
    """APP_WORKERS' default for a CPU limit: the quota in CPUs, rounded up (service/cpu.py)."""
    text = str(quantity)
    cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, math.ceil(cpus))


def check_worker_memory(objs: list[Obj]) -> list[str]:
    """Workers are recycled before the container's memory limit is reached: APP_MAX_WORKER_MEMORY is
    set, and workers x that limit, plus the main process's reserve, fit the container's limit."""
    problems = []
    for workload in workloads(objs):
        for container in containers(workload):
            where = f"{name_of(workload)} container {container['name']}"
            env = effective_env(objs, container)
            limits = container.get("resources", {}).get("limits", {})
            if "memory" not in limits:
                continue  # check_hardening reports it
            per_worker = int(env.get("APP_MAX_WORKER_MEMORY", "0"))
            if not per_worker:
                problems.append(
                    f"{where}: APP_MAX_WORKER_MEMORY is unset: a leaking worker gets the whole "
                    "container OOM-killed instead of being recycled"
                )
                continue
            workers = int(env["APP_WORKERS"]) if "APP_WORKERS" in env else cpu_count(limits.get("cpu", "1"))
            needed = workers * per_worker + MAIN_PROCESS_RESERVE_MIB
            limit = memory_mib(limits["memory"])
            if needed > limit:
                problems.append(
                    f"{where}: {workers} workers x APP_MAX_WORKER_MEMORY={per_worker} MiB + "
                    f"{MAIN_PROCESS_RESERVE_MIB} MiB for the main process = {needed} MiB, over the "
                    f"memory limit {limits['memory']} ({limit:.0f} MiB)"
                )
    return problems


# --- schema --------------------------------------------------------------------------


def check_schema(objs: list[Obj], version: str) -> list[str]:
    """Strict offline validation against one Kubernetes version's OpenAPI schemas:
    unknown (misspelt) fields and wrong types are errors. Objects of the custom
    resource kinds in CRD_KINDS are skipped (kubernetes-validate knows only built-in
    kinds); every other kind without a schema is an error."""
    import kubernetes_validate

    problems = []
    for obj in objs:
        if type_of(obj) in CRD_KINDS:
            continue  # no schema to validate against: see check_service_monitors
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{name_of(obj)} (Kubernetes {version}): {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{name_of(obj)} (Kubernetes {version}): no schema: {error}")
    return problems


# --- custom resources ----------------------------------------------------------------

# Custom resource kinds (`apiVersion/kind`) that kubernetes-validate has no schema
# for: check_schema skips exactly these, and each has its own shape check below.
# Any other object without a schema is still an error.
CRD_KINDS = frozenset({"monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"})
SERVICE_MONITOR_API = "monitoring.coreos.com/v1"
# Prometheus duration units (model.ParseDuration); `ms` precedes `m` in the regex.
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})  # what pydantic reads as False


def type_of(obj: Obj) -> str:
    return f"{obj.get('apiVersion')}/{obj.get('kind')}"


def duration_seconds(text: object) -> float | None:
    """A Prometheus duration (`30s`, `1m30s`, `500ms`) in seconds; None if malformed."""
    if not isinstance(text, str) or not text:
        return None
    parts = _DURATION.findall(text)
    if "".join(n + u for n, u in parts) != text:
        return None
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)


def _namespace(obj: Obj) -> str | None:
    namespace = obj.get("metadata", {}).get("namespace")
    return None if namespace is None else str(namespace)


def check_service_monitors(objs: list[Obj], app_paths: set[str]) -> list[str]:
    """Each ServiceMonitor (a CRD, so check_schema skips it) has the operator's
    apiVersion, selects a Service by that Service's identity (selector) labels, scrapes
    a named port of it, on a path the app serves, with a timeout within the interval,
    and the pods behind that Service have /metrics enabled."""
    problems = []
    for monitor in of_kind(objs, "ServiceMonitor"):
        where = name_of(monitor)
        if monitor.get("apiVersion") != SERVICE_MONITOR_API:
            problems.append(
                f"{where}: apiVersion {monitor.get('apiVersion')!r}, expected {SERVICE_MONITOR_API}"
            )
        spec = monitor.get("spec", {})
        selector = spec.get("selector", {})
        labels = selector.get("matchLabels", {})
        if not labels or set(selector) - {"matchLabels"}:
            problems.append(f"{where}: selector must be non-empty matchLabels only, got {selector}")
        matched = [
            s for s in _visible_services(objs, monitor) if _selects(labels, s["metadata"].get("labels", {}))
        ]
        if not matched:
            problems.append(f"{where}: selector {labels} matches no Service it can see")
        for service in matched:
            identity = set(service["spec"].get("selector", {}))
            if set(labels) - identity:
                problems.append(
                    f"{where}: selects {name_of(service)} on {sorted(set(labels) - identity)}, "
                    f"not only its identity labels {sorted(identity)}"
                )
            problems += [f"{where}: {p}" for p in _metrics_disabled(objs, service)]
        endpoints = spec.get("endpoints") or []
        if not endpoints:
            problems.append(f"{where}: no endpoints")
        for i, endpoint in enumerate(endpoints):
            problems += [
                f"{where} endpoint {i}: {p}" for p in _endpoint_problems(endpoint, matched, app_paths)
            ]
    return problems


def _visible_services(objs: list[Obj], monitor: Obj) -> list[Obj]:
    """The Services in the namespaces the ServiceMonitor looks at."""
    services = of_kind(objs, "Service")
    namespaces = monitor.get("spec", {}).get("namespaceSelector", {})
    if namespaces.get("any"):
        return services
    if "matchNames" in namespaces:
        return [s for s in services if _namespace(s) in namespaces["matchNames"]]
    # Without a namespaceSelector the operator looks in the ServiceMonitor's own namespace.
    return [s for s in services if _namespace(s) == _namespace(monitor)]


def _metrics_disabled(objs: list[Obj], service: Obj) -> list[str]:
    problems = []
    for workload in workloads(objs):
        template = workload["spec"]["template"]
        if not _selects(service["spec"].get("selector", {}), template["metadata"].get("labels", {})):
            continue
        for container in containers(workload):
            enabled = effective_env(objs, container).get("APP_METRICS_ENABLED", "true")
            if enabled.strip().lower() in _FALSE:
                problems.append(
                    f"{name_of(workload)} container {container['name']} behind {name_of(service)} "
                    f"sets APP_METRICS_ENABLED={enabled}: /metrics does not exist"
                )
    return problems


def _endpoint_problems(endpoint: Obj, services: list[Obj], app_paths: set[str]) -> list[str]:
    problems = []
    port = endpoint.get("port")
    if not isinstance(port, str) or not port:
        problems.append(f"no Service port name in `port` (got {endpoint.get('port')!r})")
    else:
        for service in services:
            names = {p.get("name") for p in service["spec"].get("ports", [])}
            if port not in names:
                problems.append(
                    f"port {port!r} is not a named port of {name_of(service)} ({sorted(names - {None})})"
                )
    path = endpoint.get("path", "/metrics")  # the operator's default
    if path not in app_paths:
        problems.append(f"path {path!r} is not a route of the app")
    if endpoint.get("scheme", "http") != "http":
        problems.append(f"scheme {endpoint['scheme']!r}: the pods serve plain HTTP")
    interval = duration_seconds(endpoint.get("interval"))
    timeout = duration_seconds(endpoint.get("scrapeTimeout"))
    for key, value in (("interval", interval), ("scrapeTimeout", timeout)):
        if not value:
            problems.append(f"{key} {endpoint.get(key)!r} is missing or not a positive Prometheus duration")
    if interval and timeout and timeout > interval:
        problems.append(f"scrapeTimeout {endpoint['scrapeTimeout']} exceeds interval {endpoint['interval']}")
    return problems


# --- alert rules and dashboards ---------------------------------------------------------

ALERT_SEVERITIES = frozenset({"critical", "warning"})
ALERT_ANNOTATIONS = ("summary", "description", "runbook_url")
DASHBOARD_LABEL = "grafana_dashboard"


def check_prometheus_rules(objs: list[Obj], rule_groups: list[Obj], runbook_anchors: set[str]) -> list[str]:
    """Each PrometheusRule (a CRD, so check_schema skips it) has the operator's apiVersion,
    lives in the Service's namespace, holds exactly the groups of the plain rule file, and
    every alert has a known severity, a summary, a description with its value and a runbook
    section that exists."""
    problems = []
    namespaces = {_namespace(s) for s in of_kind(objs, "Service")}
    for rule in of_kind(objs, "PrometheusRule"):
        where = name_of(rule)
        if rule.get("apiVersion") != SERVICE_MONITOR_API:
            problems.append(f"{where}: apiVersion {rule.get('apiVersion')!r}, expected {SERVICE_MONITOR_API}")
        if _namespace(rule) not in namespaces:
            problems.append(
                f"{where}: namespace {_namespace(rule)!r} is not the Service's {sorted(map(str, namespaces))}"
            )
        groups = rule.get("spec", {}).get("groups")
        if groups != rule_groups:
            problems.append(f"{where}: its groups differ from the plain rule file's")
        for group in groups or []:
            for item in group.get("rules", []):
                if "alert" in item:
                    problems += [
                        f"{where} alert {item['alert']}: {p}" for p in _alert_problems(item, runbook_anchors)
                    ]
    return problems


def _alert_problems(alert: Obj, runbook_anchors: set[str]) -> list[str]:
    problems = []
    severity = alert.get("labels", {}).get("severity")
    if severity not in ALERT_SEVERITIES:
        problems.append(f"severity {severity!r}, expected one of {sorted(ALERT_SEVERITIES)}")
    annotations = alert.get("annotations", {})
    problems += [f"no {key} annotation" for key in ALERT_ANNOTATIONS if not annotations.get(key)]
    if "$value" not in annotations.get("description", ""):
        problems.append("the description does not show the value ($value)")
    anchor = str(annotations.get("runbook_url", "")).partition("#")[2]
    if anchor not in runbook_anchors:
        problems.append(f"runbook_url {annotations.get('runbook_url')!r}: no such section")
    return problems


def check_dashboards(objs: list[Obj], dashboard_text: str) -> list[str]:
    """Exactly one ConfigMap carries the Grafana sidecar's label, in the Service's namespace,
    with the shipped dashboard JSON unchanged as its one key."""
    problems = []
    labelled = [
        cm for cm in of_kind(objs, "ConfigMap") if DASHBOARD_LABEL in cm["metadata"].get("labels", {})
    ]
    if len(labelled) != 1:
        return [f"{len(labelled)} ConfigMaps labelled {DASHBOARD_LABEL}, expected 1"]
    (configmap,) = labelled
    where = name_of(configmap)
    if configmap["metadata"]["labels"][DASHBOARD_LABEL] != "1":
        problems.append(
            f"{where}: label {DASHBOARD_LABEL}={configmap['metadata']['labels'][DASHBOARD_LABEL]!r}"
        )
    if _namespace(configmap) not in {_namespace(s) for s in of_kind(objs, "Service")}:
        problems.append(f"{where}: namespace {_namespace(configmap)!r} is not the Service's")
    data = configmap.get("data", {})
    if list(data) != ["asgi-deploy.json"] or data["asgi-deploy.json"] != dashboard_text:
        problems.append(f"{where}: data is not exactly asgi-deploy.json as shipped ({sorted(data)})")
    return problems
