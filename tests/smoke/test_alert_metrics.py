"""Every alert rule and every dashboard query names only metrics and labels the service really
exports: read from the exposition of a running 2-worker server that answered requests, a
WebSocket session and an event stream. A renamed metric breaks the build, not a dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from devkit import alert_rules, dashboard
from devkit.process import launched, running_server
from tests.support.certs import make_certificates, tls_server

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]

# Labels Prometheus adds to every series it scrapes (`job`, `instance`), the operator's
# `namespace` and `pod`, and the profile the service-monitor component copies from the pod
# label `asgi-deploy/server`.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "asgi_deploy_server"})
# Series Prometheus itself writes for every target.
PROMETHEUS_SERIES = {"up": frozenset()}
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}
)
FUNCTIONS = frozenset(
    {
        "rate", "irate", "increase", "delta", "sum", "count", "max", "min", "avg", "absent",
        "histogram_quantile", "count_over_time", "label_values", "vector", "scalar", "time",
    }
)  # fmt: skip
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?")


Exported = dict[str, frozenset[str]]


def exported(text: str) -> Exported:
    """Each sample name of an exposition with the label names it carries."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(names) for name, names in labels.items()}


def problems(expr: str, known: Exported, recorded: set[str]) -> list[str]:
    """The metric, label and function names in `expr` that do not exist."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold anything
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\[[^]]*\]", "", text)  # range durations
    text = re.sub(r"(?<![\w:])\d[\w.]*(?:e[-+]?\d+)?", "", text)  # numbers and durations
    # A grouping may name a label of a metric this expression reads (or one a scrape adds).
    named = {m.group(1) for m in IDENTIFIER.finditer(SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text))}
    every_label = TARGET_LABELS.union(*(labels for name, labels in known.items() if name in named))
    found = _label_problems(text, known, every_label)
    text = GROUPING.sub(" ", text)
    text = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    if text.startswith("label_values("):  # a Grafana variable: its last argument is a label
        text, _, label = text.rpartition(",")
        if label.strip(" )") not in every_label:
            found.append(f"label {label.strip(' )')!r} in label_values")
    for match in IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if name in KEYWORDS:
            continue
        if call and name not in FUNCTIONS:
            found.append(f"function {name!r}")
        elif not call and name not in known and name not in recorded:
            found.append(f"metric {name!r}")
    return found


def _label_problems(text: str, known: Exported, every_label: frozenset[str]) -> list[str]:
    """Matchers must name a label of their metric; groupings a label of some metric."""
    found = []
    for selector in SELECTOR.finditer(text):
        name, matchers = selector.group(1), selector.group(2)
        allowed = known.get(name or "", frozenset()) | TARGET_LABELS
        found += [
            f"label {label!r} of {name}" for label in MATCHER_LABEL.findall(matchers) if label not in allowed
        ]
    for group in GROUPING.finditer(text):
        for label in re.findall(r"[a-zA-Z_]\w*", group.group(1)):
            if label not in every_label:
                found.append(f"label {label!r} in {group.group(0)!r}")
    return found


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(alert_rules.RULE_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("record") or rule["alert"], rule["expr"]


def recorded_names() -> set[str]:
    return {name for name, _ in rule_expressions() if ":" in name}


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    env = {"APP_WORKERS": "2"}
    with running_server("uvicorn", env) as server:
        for _ in range(6):  # new connections: both workers answer some
            assert httpx.get(f"{server.base_url}/").status_code == 200
        assert httpx.get(f"{server.base_url}/no/such/page").status_code == 404
        with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "ping"
        with httpx.stream("GET", f"{server.base_url}/events?interval=0.05", timeout=10) as stream:
            assert stream.status_code == 200
            next(line for line in stream.iter_lines() if line.startswith("data:"))

        def ended() -> Exported:
            return exported(httpx.get(f"{server.base_url}/metrics").text)

        found = ended()
        for _ in range(100):  # the sessions' ends are counted once the server has seen them close
            if {"realtime_sessions_ended_total", "websocket_messages_total"} <= set(found):
                break
            found = ended()
    return {**found, **tls_exposition(tmp_path_factory), **PROMETHEUS_SERIES}


def tls_exposition(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """What a server adds with TLS on: the served certificate's expiry time."""
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    with launched(tls_server(certs.client_context()), "uvicorn", certs.env()) as server:
        server.wait_ready()
        text = httpx.get(f"{server.base_url}/metrics", verify=certs.client_context()).text
    return exported(text)


def test_every_rule_uses_exported_metrics_and_labels(exposition: Exported) -> None:
    assert "http_request_duration_seconds_bucket" in exposition
    assert "pid" in exposition["process_worker_resident_memory_bytes"]
    assert {"close", "kind", "route"} <= exposition["realtime_sessions_ended_total"]
    recorded = recorded_names()
    found = {name: problems(expr, exposition, recorded) for name, expr in rule_expressions()}
    assert {name: p for name, p in found.items() if p} == {}


def test_every_dashboard_query_uses_exported_metrics_and_labels(exposition: Exported) -> None:
    board = json.loads(dashboard.DASHBOARD.read_text())
    queries = list(dashboard.expressions(board))
    assert len(queries) > 20
    recorded = recorded_names()
    assert {q: p for q in queries if (p := problems(q, exposition, recorded))} == {}


KNOWN = {
    "http_requests_total": frozenset({"method", "route", "status"}),
    "process_worker_cpu_seconds": frozenset({"pid"}),
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (route) (rate(http_requests_total{job="x", status=~"5.."}[5m]))', []),
        ('rate(http_request_total{job="x"}[5m])', ["metric 'http_request_total'"]),
        ('http_requests_total{code="500"}', ["label 'code' of http_requests_total"]),
        ("sum by (handler) (http_requests_total)", ["label 'handler' in 'by (handler)'"]),
        ("sum by (pid) (http_requests_total)", ["label 'pid' in 'by (pid)'"]),  # another metric's label
        ("rate(process_worker_cpu_seconds_total[1m])", ["metric 'process_worker_cpu_seconds_total'"]),
        ("rates(process_worker_cpu_seconds[$__rate_interval]) > 0.9 * 2e6", ["function 'rates'"]),
        ("asgi_deploy:known:rate5m / 1e-3", []),
        ("asgi_deploy:unknown:rate5m", ["metric 'asgi_deploy:unknown:rate5m'"]),
        ('label_values(http_requests_total{job="x"}, asgi_deploy_server)', []),
        ('label_values(http_requests_total{job="x"}, server)', ["label 'server' in label_values"]),
        (
            "count by (instance) (process_worker_cpu_seconds unless on (instance, pid) x offset 15m)",
            ["metric 'x'"],
        ),
    ],
)
def test_the_name_check_finds_what_does_not_exist(expr: str, expected: list[str]) -> None:
    assert problems(expr, KNOWN, {"asgi_deploy:known:rate5m"}) == expected
