"""The results document (the JSON file) and the ratios derived from it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.runner import Plan, Results


def ratios(results: Results) -> list[dict[str, Any]]:
    """Per (profile, workers), requests/s on GET / and POST /echo: the service at the production
    defaults (access line on) and with the access line off, each over bare FastAPI (the same
    route code); the service over raw ASGI on GET /."""
    rps = {(p.profile, p.workers, p.app, p.workload): p.rps for p in results.points}

    def over(group: tuple[str, int], app: str, other: str, workload: str) -> float | None:
        mine, theirs = rps.get((*group, app, workload)), rps.get((*group, other, workload))
        return mine / theirs if mine and theirs else None

    rows = []
    for profile, workers in dict.fromkeys((p, w) for p, w, _, _ in rps):
        group = (profile, workers)
        rows.append(
            {
                "profile": profile,
                "workers": workers,
                "service_rps": rps.get((*group, "service", "get")),
                "service_quiet_rps": rps.get((*group, "service-quiet", "get")),
                "bare_rps": rps.get((*group, "bare", "get")),
                "raw_rps": rps.get((*group, "raw", "get")),
                "service_over_bare": over(group, "service", "bare", "get"),
                "service_quiet_over_bare": over(group, "service-quiet", "bare", "get"),
                "service_over_raw": over(group, "service", "raw", "get"),
                "echo_service_over_bare": over(group, "service", "bare", "echo"),
                "echo_service_quiet_over_bare": over(group, "service-quiet", "bare", "echo"),
            }
        )
    return rows


def document(
    *,
    machine: dict[str, Any],
    software: dict[str, str],
    generator: str,
    plan: Plan,
    results: Results,
    seconds: float,
    layers: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    return {
        "machine": machine,
        "software": software,
        "generator": generator,
        "plan": {
            "profiles": list(plan.profiles),
            "worker_counts": list(plan.worker_counts),
            "apps": {app.key: app.import_string for app in plan.apps},
            "workloads": [w.label for w in plan.workloads],
            "duration_s": plan.duration,
            "warmup_s": plan.warmup,
            "connections": plan.connections,
            "rounds": plan.rounds,
            "round_duration_s": plan.round_duration or plan.duration,
            "app_settings": {app.key: dict(app.settings) for app in plan.apps},
        },
        "wall_time_s": round(seconds, 1),
        "points": [asdict(p) for p in results.points],
        "servers": [{**asdict(s), "growth_mb": s.growth_mb} for s in results.servers],
        "ratios": ratios(results),
        "layers_us": layers or {},
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
