"""The alert rules and the dashboard: generated from one source, valid for the real promtool,
each alert proven by series that must fire it and series that must not
(tests/k8s/alerts/rules_test.yaml), and shipped by their components as documented."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit import alert_rules, dashboard
from tests.k8s import checks
from tests.k8s.tools import NEWEST_K8S, REPO_ROOT
from tests.support.tools import require_tools

Objects = list[dict[str, Any]]

RULES_TEST = Path(__file__).parent / "alerts" / "rules_test.yaml"
RUNBOOK = REPO_ROOT / "docs" / "alerts.md"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tools("promtool", install="apt-get install prometheus")["promtool"]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def runbook_anchors() -> set[str]:
    """The anchors of docs/alerts.md's sections, as GitHub and most Markdown renderers make them."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w -]", "", h).strip().lower().replace(" ", "-") for h in headings}


def shipped_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(alert_rules.RULE_FILE.read_text())["groups"]
    return groups


def alert_names() -> list[str]:
    return [r["alert"] for g in shipped_groups() for r in g["rules"] if "alert" in r]


# --- one source -------------------------------------------------------------------------


def test_shipped_files_are_what_the_generators_write() -> None:
    fix = "run `python -m devkit.alert_rules --write` and `python -m devkit.dashboard --write`"
    assert alert_rules.RULE_FILE.read_text() == alert_rules.rule_file(), fix
    assert alert_rules.PROMETHEUS_RULE.read_text() == alert_rules.prometheus_rule(), fix
    assert dashboard.DASHBOARD.read_text() == dashboard.render(), fix


def test_shipped_rules_use_the_base_settings() -> None:
    """The thresholds that are settings follow what k8s/base runs with."""
    exprs = {r.get("alert", r.get("record")): r["expr"] for g in shipped_groups() for r in g["rules"]}
    memory = int(alert_rules.base_setting("APP_MAX_WORKER_MEMORY"))
    assert exprs["AsgiDeployWorkerMemoryNearLimit"].endswith(f"> 0.9 * {memory * alert_rules.MIB}")
    capacity = exprs["asgi_deploy_instance:http_requests_in_progress:ratio_capacity"]
    assert f"/ ({alert_rules.default_max_concurrency()} * count by" in capacity
    assert "[1h]" in exprs["asgi_deploy:http_requests_errors:ratio_rate1h"]
    assert not any("ms]" in expr for expr in exprs.values())  # never the test's short windows


def test_windows_scale_for_the_test_only() -> None:
    assert alert_rules.scaled("1h", 1 / 60) == "60s"
    assert alert_rules.scaled("5m", 1 / 120) == "2500ms"
    assert alert_rules.scaled("3d", 1) == "3d"
    short = alert_rules.rule_file(alert_rules.Parameters(window_scale=1 / 60))
    assert "[60s]" in short
    assert "[1h]" not in short
    assert "offset 15s" in short


# --- promtool ---------------------------------------------------------------------------


def test_promtool_checks_the_rule_file_and_the_prometheus_rule(promtool: str, tmp_path: Path) -> None:
    result = run([promtool, "check", "rules", str(alert_rules.RULE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in shipped_groups())} rules found" in result.stdout
    spec = yaml.safe_load(alert_rules.PROMETHEUS_RULE.read_text())["spec"]
    (tmp_path / "operator.rules.yaml").write_text(yaml.safe_dump(spec))
    result = run([promtool, "check", "rules", str(tmp_path / "operator.rules.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    broken = alert_rules.RULE_FILE.read_text().replace(
        "sum by (namespace, job) (rate(", "sum by (namespace, job) (rate((", 1
    )
    (tmp_path / "broken.yaml").write_text(broken)
    result = run([promtool, "check", "rules", str(tmp_path / "broken.yaml")])
    assert result.returncode != 0


def test_promtool_rule_tests_pass(promtool: str) -> None:
    result = run([promtool, "test", "rules", str(RULES_TEST)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_cases_that_fire_it_and_cases_that_must_not() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert set(alert_names()) - fired == set(), "alerts no case fires"
    assert set(alert_names()) - silent == set(), "alerts no case keeps silent"


def rule_tests_against(rules: str, promtool: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """rules_test.yaml run against other rules."""
    (tmp_path / "rules.yaml").write_text(rules)
    cases = yaml.safe_load(RULES_TEST.read_text())
    cases["rule_files"] = ["rules.yaml"]
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(cases))
    return run([promtool, "test", "rules", str(tmp_path / "rules_test.yaml")])


@pytest.mark.parametrize(
    ("change", "alert"),
    [
        # A 99% objective: 2.4% of 5xx no longer burns 14.4 x the budget.
        (alert_rules.Parameters(availability_objective=0.99), "AsgiDeployErrorBudgetFastBurn"),
        (alert_rules.Parameters(max_concurrency=1024), "AsgiDeploySaturated"),
        (alert_rules.Parameters(worker_starts=4), "AsgiDeployWorkerRestarts"),
        (alert_rules.Parameters(job="other"), "AsgiDeployNoTargetUp"),
        # 7 days: a certificate 11.5 days from its end no longer warns.
        (alert_rules.Parameters(certificate_days=7), "AsgiDeployCertificateExpiresSoon"),
    ],
    ids=["objective", "concurrency", "restarts", "job", "certificate"],
)
def test_rule_tests_fail_on_other_rules(
    promtool: str, tmp_path: Path, change: alert_rules.Parameters, alert: str
) -> None:
    result = rule_tests_against(alert_rules.rule_file(change), promtool, tmp_path)
    assert result.returncode != 0
    assert f"alertname: {alert}" in result.stdout + result.stderr


def test_rule_tests_fail_without_the_counter_reset_handled(promtool: str, tmp_path: Path) -> None:
    """`delta` instead of `rate` reads the restarted pod's counter drop as negative traffic."""
    rules = alert_rules.rule_file().replace("(rate(http_requests_total", "(delta(http_requests_total")
    result = rule_tests_against(rules, promtool, tmp_path)
    assert result.returncode != 0
    assert "counter reset" in result.stdout + result.stderr


# --- the components -----------------------------------------------------------------------


@pytest.fixture
def alerted(render_variant: Callable[[str], Objects]) -> Objects:
    return render_variant("uvicorn+alerts")


@pytest.fixture
def dashboarded(render_variant: Callable[[str], Objects]) -> Objects:
    return render_variant("uvicorn+dashboard")


def test_alerts_component_ships_the_rule_file(alerted: Objects) -> None:
    (rule,) = checks.of_kind(alerted, "PrometheusRule")
    assert checks.type_of(rule) in checks.CRD_KINDS
    assert checks.check_prometheus_rules(alerted, shipped_groups(), runbook_anchors()) == []
    assert checks.check_schema(alerted, NEWEST_K8S) == []


def test_every_alert_has_a_runbook_section() -> None:
    assert {name.lower() for name in alert_names()} <= runbook_anchors()


def _alerts(objs: Objects) -> list[dict[str, Any]]:
    (rule,) = checks.of_kind(objs, "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


BROKEN_RULES = [
    pytest.param(
        lambda o: checks.of_kind(o, "PrometheusRule")[0].update(apiVersion="monitoring.coreos.com/v2"),
        "apiVersion",
        id="api",
    ),
    pytest.param(
        lambda o: checks.of_kind(o, "PrometheusRule")[0]["metadata"].update(namespace="monitoring"),
        "namespace",
        id="namespace",
    ),
    pytest.param(lambda o: _alerts(o)[0]["labels"].update(severity="page"), "severity 'page'", id="severity"),
    pytest.param(lambda o: _alerts(o)[1]["annotations"].pop("summary"), "no summary", id="summary"),
    pytest.param(lambda o: _alerts(o)[2]["annotations"].update(description="slow"), "$value", id="value"),
    pytest.param(
        lambda o: _alerts(o)[3]["annotations"].update(runbook_url="docs/alerts.md#nope"),
        "no such section",
        id="runbook",
    ),
    pytest.param(
        lambda o: _alerts(o)[4].update(expr="vector(1)"), "differ from the plain rule file", id="drift"
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), BROKEN_RULES)
def test_prometheus_rule_check_catches_a_broken_rule(alerted: Objects, breakage: Any, expected: str) -> None:
    breakage(alerted)
    problems = checks.check_prometheus_rules(alerted, shipped_groups(), runbook_anchors())
    assert any(expected in p for p in problems), problems


def test_dashboard_component_ships_the_json(dashboarded: Objects) -> None:
    assert checks.check_dashboards(dashboarded, dashboard.DASHBOARD.read_text()) == []
    assert checks.check_schema(dashboarded, NEWEST_K8S) == []
    board = json.loads(dashboard.DASHBOARD.read_text())
    titles = " ".join(p["title"] for p in board["panels"])
    for signal in (
        "Traffic per route",
        "Errors per profile",
        "Latency per route",
        "Saturation per profile",
        "Saturation per method",
        "Open sessions",
        "Resident memory per worker",
        "CPU per worker",
        "worker starts",
        "burn rate",
    ):
        assert signal in titles


def _dashboard_map(objs: Objects) -> dict[str, Any]:
    return next(
        cm
        for cm in checks.of_kind(objs, "ConfigMap")
        if "grafana_dashboard" in cm["metadata"].get("labels", {})
    )


BROKEN_DASHBOARDS = [
    pytest.param(
        lambda o: _dashboard_map(o)["metadata"]["labels"].update(grafana_dashboard="true"),
        "label",
        id="label",
    ),
    pytest.param(
        lambda o: _dashboard_map(o)["metadata"]["labels"].pop("grafana_dashboard"),
        "0 ConfigMaps",
        id="unlabelled",
    ),
    pytest.param(
        lambda o: _dashboard_map(o)["data"].update({"asgi-deploy.json": "{}"}), "not exactly", id="data"
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), BROKEN_DASHBOARDS)
def test_dashboard_check_catches_a_broken_configmap(
    dashboarded: Objects, breakage: Any, expected: str
) -> None:
    breakage(dashboarded)
    problems = checks.check_dashboards(dashboarded, dashboard.DASHBOARD.read_text())
    assert any(expected in p for p in problems), problems


def test_service_monitor_labels_series_with_the_profile(render_variant: Callable[[str], Objects]) -> None:
    """The dashboard's `profile` variable reads `asgi_deploy_server`: the pod label the
    ServiceMonitor copies (the operator turns `asgi-deploy/server` into that name)."""
    objs = render_variant("gunicorn+service-monitor")
    (monitor,) = checks.of_kind(objs, "ServiceMonitor")
    (deployment,) = checks.of_kind(objs, "Deployment")
    (label,) = monitor["spec"]["podTargetLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"][label] == "gunicorn"
    assert re.sub(r"[^a-zA-Z0-9_]", "_", label) in dashboard.DASHBOARD.read_text()


def test_promtool_is_on_the_ci_tool_list() -> None:
    """CI installs Debian's prometheus package (prometheus and promtool), so these tests run there."""
    assert re.search(r"for tool in [^;]*\bprometheus\b", (REPO_ROOT / ".ci" / "run").read_text())


def _restart_case(new_pids: int) -> dict[str, Any]:
    """Pod a answers 100 requests a minute; `new_pids` workers start at 31m."""
    pod = 'job="asgi-deploy", namespace="shop", instance="a"'
    series = [
        {
            "series": f'http_requests_total{{{pod}, method="GET", route="/", status="200"}}',
            "values": "0+100x50",
        },
        {"series": f'process_worker_resident_memory_bytes{{{pod}, pid="1"}}', "values": "1x30 stale"},
    ]
    series += [
        {"series": f'process_worker_resident_memory_bytes{{{pod}, pid="{100 + n}"}}', "values": "_x30 1x20"}
        for n in range(new_pids)
    ]
    return {"interval": "1m", "input_series": series}


def test_restarts_that_max_requests_explains_do_not_alert(promtool: str, tmp_path: Path) -> None:
    """With APP_MAX_REQUESTS=1000, 1500 requests in 15 minutes explain 1.5 starts: 3 starts are
    1.5 unexplained (silent), 5 starts 3.5 (an alert)."""
    rules = alert_rules.rule_file(alert_rules.Parameters(max_requests=1000))
    (tmp_path / "rules.yaml").write_text(rules)
    quiet = {
        **_restart_case(3),
        "alert_rule_test": [{"eval_time": "40m", "alertname": "AsgiDeployWorkerRestarts"}],
    }
    loud = {
        **_restart_case(5),
        "promql_expr_test": [
            {
                "expr": "asgi_deploy_instance:worker_starts:count15m",
                "eval_time": "40m",
                "exp_samples": [
                    {
                        "labels": 'asgi_deploy_instance:worker_starts:count15m{job="asgi-deploy", '
                        'namespace="shop", instance="a"}',
                        "value": 5,
                    }
                ],
            }
        ],
    }
    cases = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [quiet, loud]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cases))
    result = run([promtool, "test", "rules", str(tmp_path / "test.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr
    # Expecting the 5-start pod to stay silent fails: it fires, with 3.5 unexplained starts.
    loud["alert_rule_test"] = [{"eval_time": "40m", "alertname": "AsgiDeployWorkerRestarts"}]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cases))
    result = run([promtool, "test", "rules", str(tmp_path / "test.yaml")])
    assert result.returncode != 0
    assert "AsgiDeployWorkerRestarts" in result.stdout + result.stderr
    assert "3.5 more workers started" in result.stdout + result.stderr


def test_dashboard_layout() -> None:
    """Unique panel ids, panels inside the 24-column grid and never on top of each other, every
    query on the dashboard's data source variable."""
    board = json.loads(dashboard.DASHBOARD.read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= dashboard.WIDTH, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


def test_rules_for_other_settings_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """What docs/alerts.md tells a gunicorn overlay's user to run."""
    alert_rules.main(["--max-worker-memory-mib", "320", "--max-requests", "10000", "--operator"])
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["kind"] == "PrometheusRule"
    exprs = {r.get("alert"): r["expr"] for g in document["spec"]["groups"] for r in g["rules"]}
    assert exprs["AsgiDeployWorkerMemoryNearLimit"].endswith(f"> 0.9 * {320 * alert_rules.MIB}")
    assert "/ 10000 >= 3" in exprs["AsgiDeployWorkerRestarts"]
