"""The fan-out benchmark's results document (docs/bench/rooms.json), its summary and its Markdown."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.tables import markdown_table


def broker_versions(redis_server: str) -> dict[str, str]:
    found = {}
    with contextlib.suppress(metadata.PackageNotFoundError):
        found["redis-py"] = metadata.version("redis")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        command = [redis_server, "--version"]
        banner = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout  # noqa: S603
        found["redis-server"] = next((w[2:] for w in banner.split() if w.startswith("v=")), banner.strip())
    return found


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _over(mine: float | None, theirs: float | None) -> float | None:
    return round(mine / theirs, 2) if mine and theirs else None


def summary(runs: list[dict[str, Any]], outages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per profile and app: every delivery counted over all rounds, the median round's figures,
    the median recovery; then the service over bare FastAPI."""
    rows = []
    for profile in dict.fromkeys(run["profile"] for run in runs):
        row: dict[str, Any] = {"profile": profile}
        for app in ("service", "bare"):
            mine = [run for run in runs if run["profile"] == profile and run["app"] == app]
            phases = [run[kind] for run in mine for kind in ("paced", "burst") if run[kind]]
            paced = [run["paced"] for run in mine if run["paced"]]
            bursts = [run["burst"] for run in mine if run["burst"]]
            recoveries = [o["recovery_s"].get(app) for o in outages if o["profile"] == profile]
            row[app] = {
                "sent": sum(p["sent"] for p in phases),
                "expected": sum(p["expected"] for p in phases),
                "delivered": sum(p["delivered"] for p in phases),
                "lost": sum(p["lost"] for p in phases),
                "out_of_order": sum(p["out_of_order"] for p in phases),
                "failures": [run["failure"] for run in mine if run["failure"]]
                + [p["failure"] for p in phases if p["failure"]],
                "paced_p50_ms": _median([p["p50_ms"] for p in paced]),
                "paced_p99_ms": _median([p["p99_ms"] for p in paced]),
                "burst_deliveries_per_s": _median([p["deliveries_per_s"] for p in bursts]),
                "burst_p99_ms": _median([p["p99_ms"] for p in bursts]),
                # The first outage is a fresh one. The next follow it within seconds: a worker's
                # backoff has not reset yet (service/redis_broker.py), as with a flapping broker.
                "recovery_s": recoveries[0] if recoveries else None,
                "recovery_again_s": _median(recoveries[1:]),
            }
        service, bare = row["service"], row["bare"]
        row["service_over_bare"] = {
            key: _over(service[key], bare[key])
            for key in ("paced_p50_ms", "paced_p99_ms", "burst_deliveries_per_s", "recovery_s")
        }
        rows.append(row)
    return rows


def document(
    *,
    machine: dict[str, Any],
    software: dict[str, str],
    plan: dict[str, Any],
    runs: list[dict[str, Any]],
    outages: list[dict[str, Any]],
    servers: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    return {
        "machine": machine,
        "software": software,
        "plan": plan,
        "wall_time_s": round(seconds, 1),
        "runs": runs,
        "outages": outages,
        "servers": servers,
        "summary": summary(runs, outages),
    }


def redraw(results: Path, tables: Path | None) -> None:
    """The summary and Markdown again from a results file's measurements."""
    doc = json.loads(results.read_text())
    doc["summary"] = summary(doc["runs"], doc["outages"])
    write_json(doc, results)
    if tables is not None:
        tables.write_text(markdown(doc))


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _pair(service: float | None, bare: float | None, digits: int) -> str:
    return f"{_num(service, digits)} / {_num(bare, digits)}"


def summary_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "profile",
        "delivered / expected, service",
        "bare",
        "paced p50 ms service / bare",
        "p99 ms service / bare",
        "p99 service/bare",
        "burst deliveries/s service / bare",
        "service/bare",
        "recovery s service / bare",
        "again s service / bare",
    ]
    rows = []
    for row in doc["summary"]:
        service, bare, ratio = row["service"], row["bare"], row["service_over_bare"]
        rows.append(
            [
                row["profile"],
                _delivered(service),
                _delivered(bare),
                _pair(service["paced_p50_ms"], bare["paced_p50_ms"], 2),
                _pair(service["paced_p99_ms"], bare["paced_p99_ms"], 2),
                _num(ratio["paced_p99_ms"]),
                _pair(service["burst_deliveries_per_s"], bare["burst_deliveries_per_s"], 0),
                _num(ratio["burst_deliveries_per_s"]),
                _pair(service["recovery_s"], bare["recovery_s"], 3),
                _pair(service["recovery_again_s"], bare["recovery_again_s"], 3),
            ]
        )
    return header, rows


def _delivered(figures: dict[str, Any]) -> str:
    text = f"{figures['delivered']:,}/{figures['expected']:,}"
    if figures["out_of_order"]:
        text += f", {figures['out_of_order']} out of order"
    return text


def run_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["profile", "app", "round", "paced delivered", "p50 ms", "p99 ms",
              "burst delivered", "deliveries/s", "burst p99 ms", "failure"]  # fmt: skip
    rows = []
    for run in doc["runs"]:
        paced, burst = run["paced"] or {}, run["burst"] or {}
        failure = run["failure"] or paced.get("failure") or burst.get("failure") or ""
        rows.append(
            [
                run["profile"],
                run["app"],
                str(run["round"] + 1),
                f"{paced.get('delivered', 0)}/{paced.get('expected', 0)}",
                _num(paced.get("p50_ms")),
                _num(paced.get("p99_ms")),
                f"{burst.get('delivered', 0)}/{burst.get('expected', 0)}",
                _num(burst.get("deliveries_per_s"), 0),
                _num(burst.get("p99_ms")),
                failure,
            ]
        )
    return header, rows


def summary_markdown(doc: dict[str, Any]) -> str:
    return markdown_table(*summary_rows(doc))


def markdown(doc: dict[str, Any]) -> str:
    m, plan = doc["machine"], doc["plan"]
    software = ", ".join(f"{k} {v}" for k, v in doc["software"].items())
    outages = [
        [o["profile"], str(o["number"] + 1), _num(o["down_s"], 3),
         *(_num(o["recovery_s"].get(app), 3) for app in ("service", "bare"))]
        for o in doc["outages"]
    ]  # fmt: skip
    return "\n".join(
        [
            "# Rooms fan-out results",
            "",
            "Recorded with `make bench-rooms` (`python -m bench.fanout`). One run on a shared, noisy",
            "machine: compare the two apps within this run; the absolute numbers do not transfer.",
            "",
            "## Machine",
            "",
            f"- `nproc`: {m['nproc']} (host: {m['host_cpus']}); CPU: {m['cpu_model']}",
            f"- Python {m['python']}, {m['platform']}",
            f"- load average at start: {', '.join(str(x) for x in m['loadavg_at_start'])}",
            f"- software: {software}",
            "",
            "## Method",
            "",
            f"- per profile, the service (`{plan['apps']['service']}`, production defaults) and bare FastAPI"
            f" with redis-py (`{plan['apps']['bare']}`) side by side, each as {plan['instances']} instances"
            f" of {plan['workers']} workers sharing one redis-server on loopback",
            f"- members per app and round: {plan['websocket_members_per_worker']} WebSocket(s) on every"
            f" worker of every instance and {plan['event_streams_per_instance']} event stream per instance"
            f" ({plan['members']} in all); the publisher is one of them",
            f"- {plan['rounds']} round(s), each app once per round, the first alternating; every figure is"
            " the app's median round; delivered counts every round",
            f"- paced: {plan['paced_messages']} messages at {plan['paced_rate_per_s']:g}/s, alternately"
            " from a member's WebSocket on the first instance and a `POST` on the second; latency from just"
            " before the send to receipt by each member, read by the same client process",
            f"- burst: {plan['burst_messages']} messages from one member's WebSocket as fast as it sends;"
            " deliveries/s = messages received by all members / (last receipt - first send)",
            f"- outages: {plan['outages']}; redis-server killed (SIGKILL) and started again at once; recovery"
            " = seconds from it answering PING until a new member on one instance gets what a new member"
            " on the other sends, both apps probed at the same time; `recovery` is the first outage,"
            " `again` the median of the next ones, each started as soon as every worker had the broker"
            " back (the service's reconnect backoff has not reset yet: a flapping broker)",
            f"- whole run {doc['wall_time_s']:g} s",
            "",
            "## Summary",
            "",
            summary_markdown(doc),
            "",
            "## Outages",
            "",
            markdown_table(["profile", "outage", "down s", "recovery s service", "bare"], outages),
            "",
            "## Rounds",
            "",
            markdown_table(*run_rows(doc)),
            "",
        ]
    )
