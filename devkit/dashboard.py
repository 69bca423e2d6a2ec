"""The service's Grafana dashboard, generated with the alert rules' parameters.

`python -m devkit.dashboard --write` writes k8s/components/dashboard/asgi-deploy.json;
tests/k8s/test_alerts.py fails when the file differs from what this module generates. The
SLO panels divide by the same error budgets as the alerts (devkit/alert_rules.py).

Every query selects the scrape job and the dashboard's two variables: `namespace`, and
`profile`, the pod label `asgi-deploy/server` that the service-monitor component copies onto
every series as `asgi_deploy_server` (absent without it: "All" matches that too).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from devkit.alert_rules import REPO_ROOT, Parameters

DASHBOARD = REPO_ROOT / "k8s" / "components" / "dashboard" / "asgi-deploy.json"
UID = "asgi-deploy"
WIDTH = 24  # Grafana's grid
RATE = "$__rate_interval"
SLO_WINDOWS = ("5m", "1h", "6h", "1d")


class Panels:
    """Lays panels out left to right, rows of `per_row`, each section under a row header."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.row_height = 0

    def section(self, title: str) -> None:
        self._next_line()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "id": len(self.panels) + 1,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _next_line(self) -> None:
        self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def add(
        self,
        title: str,
        targets: Sequence[tuple[str, str]],
        unit: str,
        description: str,
        width: int = 12,
    ) -> None:
        if self.x + width > WIDTH:
            self._next_line()
        self.panels.append(
            {
                "type": "timeseries",
                "title": title,
                "description": description,
                "id": len(self.panels) + 1,
                "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {
                    "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]}
                },
                "targets": [
                    {
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        "expr": expr,
                        "legendFormat": legend,
                        "refId": chr(ord("A") + i),
                    }
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
        self.x += width
        self.row_height = max(self.row_height, 8)


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(parameters: Parameters | None = None) -> dict[str, Any]:
    p = (parameters or Parameters()).resolved()
    sel = f'job="{p.job}", namespace=~"$namespace", asgi_deploy_server=~"$profile"'
    slo = f'job="{p.job}", namespace=~"$namespace"'
    panels = Panels()
    for build in (_golden_signals, _connections, _workers, _slo):
        build(panels, p, sel if build is not _slo else slo)
    return {
        "title": "asgi-deploy",
        "uid": UID,
        "description": "The service's four golden signals, long-lived connections, workers and SLO burn.",
        "tags": ["asgi-deploy"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                _variable("namespace", "Namespace", f'label_values(up{{job="{p.job}"}}, namespace)'),
                _variable(
                    "profile",
                    "Profile",
                    f'label_values(http_requests_total{{job="{p.job}"}}, asgi_deploy_server)',
                ),
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels.panels,
    }


def _golden_signals(panels: Panels, p: Parameters, sel: str) -> None:
    requests = f"http_requests_total{{{sel}}}"
    errors = f'http_requests_total{{{sel}, status=~"5.."}}'
    buckets = f"http_request_duration_seconds_bucket{{{sel}}}"
    for by, what in (("route", "route"), ("asgi_deploy_server", "profile")):
        legend = f"{{{{{by}}}}}"
        panels.section(f"Golden signals per {what} (short requests; WebSockets and streams below)")
        panels.add(
            f"Traffic per {what}",
            [(f"sum by ({by}) (rate({requests}[{RATE}]))", legend)],
            "reqps",
            "Requests answered per second (http_requests_total).",
        )
        panels.add(
            f"Errors per {what}: share of 5xx",
            [
                (
                    f"sum by ({by}) (rate({errors}[{RATE}])) / sum by ({by}) (rate({requests}[{RATE}]))",
                    legend,
                )
            ],
            "percentunit",
            f"Share of requests answered with a 5xx; the availability objective allows "
            f"{(1 - p.availability_objective) * 100:.3g}%.",
        )
        panels.add(
            f"Latency per {what}: p50, p95, p99",
            [
                (
                    f"histogram_quantile({q}, sum by ({by}, le) (rate({buckets}[{RATE}])))",
                    f"{legend} p{round(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            "s",
            "From the http_request_duration_seconds histogram (interpolated within a bucket).",
        )
        # Requests in flight are counted by method: the route is only known once routing ran.
        in_flight_by = "method" if by == "route" else by
        panels.add(
            f"Saturation per {'method' if by == 'route' else what}: requests in progress",
            [(f"sum by ({in_flight_by}) (http_requests_in_progress{{{sel}}})", f"{{{{{in_flight_by}}}}}")],
            "short",
            f"Requests being handled now. Each worker takes APP_MAX_CONCURRENCY={p.max_concurrency} at "
            "once and answers 503 past it.",
        )


def _connections(panels: Panels, p: Parameters, sel: str) -> None:
    panels.section("Long-lived connections (WebSockets, event streams)")
    panels.add(
        "Open sessions",
        [(f"sum by (kind, route) (realtime_sessions_open{{{sel}}})", "{{kind}} {{route}}")],
        "short",
        "WebSocket sessions and event streams open now, summed over workers and pods.",
    )
    panels.add(
        "Sessions ended, by close code",
        [
            (
                f"sum by (kind, close) (rate(realtime_sessions_ended_total{{{sel}}}[{RATE}]))",
                "{{kind}} {{close}}",
            )
        ],
        "ops",
        "1000 normal, 1001 going away, 1012 the drain; other codes are abnormal. Streams end by "
        "`client` or `shutdown`.",
    )
    panels.add(
        "WebSocket messages",
        [
            (
                f"sum by (route, direction) (rate(websocket_messages_total{{{sel}}}[{RATE}]))",
                "{{route}} {{direction}}",
            )
        ],
        "ops",
        "Messages received (in) and sent (out) per second.",
    )
    panels.add(
        "Events delivered",
        [(f"sum by (route) (rate(event_stream_events_total{{{sel}}}[{RATE}]))", "{{route}}")],
        "ops",
        "Server-sent events delivered per second.",
    )


def _workers(panels: Panels, p: Parameters, sel: str) -> None:
    panels.section("Workers")
    panels.add(
        "Resident memory per worker",
        [(f"process_worker_resident_memory_bytes{{{sel}}}", "{{instance}} pid {{pid}}")],
        "bytes",
        f"A worker past APP_MAX_WORKER_MEMORY={p.max_worker_memory_mib} MiB is recycled.",
        width=8,
    )
    panels.add(
        "CPU per worker",
        [(f"rate(process_worker_cpu_seconds{{{sel}}}[{RATE}])", "{{instance}} pid {{pid}}")],
        "percentunit",
        "CPU time per second of each worker (1 = one core).",
        width=8,
    )
    panels.add(
        "Open file descriptors per worker",
        [(f"process_worker_open_fds{{{sel}}}", "{{instance}} pid {{pid}}")],
        "short",
        "Sockets and files each worker holds open.",
        width=8,
    )
    panels.add(
        "Workers and worker starts",
        [
            (
                # `> 0`: not the main process (see devkit/alert_rules.py)
                f"count by (instance) (process_worker_resident_memory_bytes{{{sel}}} > 0)",
                "{{instance}} workers",
            ),
            (
                f'asgi_deploy_instance:worker_starts:count15m{{job="{p.job}", namespace=~"$namespace"}}',
                "{{instance}} started in 15m",
            ),
        ],
        "short",
        "Live workers per pod, and workers started in the last 15 minutes in a pod already running "
        "(recycling, crashes, hangs: the service exports no restart counter; a new pid is a start).",
        width=24,
    )


def _slo(panels: Panels, p: Parameters, sel: str) -> None:
    panels.section("SLO burn rate (1 = spending the budget exactly over the SLO period)")
    for record, budget, what in (
        ("asgi_deploy:http_requests_errors:ratio_rate", 1 - p.availability_objective, "Availability (5xx)"),
        (
            "asgi_deploy:http_requests_slow:ratio_rate",
            1 - p.latency_objective,
            f"Latency (over {p.latency_threshold} s)",
        ),
    ):
        panels.add(
            f"{what} error budget burn rate",
            [
                (f"{record}{window}{{{sel}}} / {budget:.6g}", f"{{{{namespace}}}} {window}")
                for window in SLO_WINDOWS
            ],
            "short",
            "The error ratio over each window divided by the budget. The fast-burn alert pages at 14.4 "
            "(1h and 5m) or 6 (6h and 30m); the slow-burn one opens a ticket at 3 (1d and 2h) or 1 (3d "
            "and 6h).",
        )


def expressions(board: dict[str, Any]) -> Iterator[str]:
    """Every PromQL query of the dashboard: panel targets and variable queries."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["definition"]


def render(parameters: Parameters | None = None) -> str:
    return json.dumps(dashboard(parameters), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the dashboard, or --write the shipped file.")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.write:
        Path(DASHBOARD).write_text(render())
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
