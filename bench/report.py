"""The results document (the JSON file) and the ratios derived from it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.runner import Plan, Results


def ratios(results: Results) -> list[dict[str, Any]]:
    """Per (profile, workers), requests/s on GET /: the service at the production defaults (access
    line on) and with the access line off, each over bare FastAPI; the service over raw ASGI."""
    rps = {(p.profile, p.workers, p.app): p.rps for p in results.points if p.workload == "get"}
    rows = []
    for profile, workers in dict.fromkeys((p, w) for p, w, _ in rps):
        service, quiet, bare, raw = (
            rps.get((profile, workers, app)) for app in ("service", "service-quiet", "bare", "raw")
        )
        rows.append(
            {
                "profile": profile,
                "workers": workers,
                "service_rps": service,
                "service_quiet_rps": quiet,
                "bare_rps": bare,
                "raw_rps": raw,
                "service_over_bare": service / bare if service and bare else None,
                "service_quiet_over_bare": quiet / bare if quiet and bare else None,
                "service_over_raw": service / raw if service and raw else None,
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
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
