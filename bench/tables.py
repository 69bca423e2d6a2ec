"""The results as tables: rich on the terminal, Markdown for docs/bench/results.md (same rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.load import WORKLOADS
from bench.runner import MAX_ATTEMPTS, UNEVEN_FACTOR

Rows = tuple[list[str], list[list[str]]]
TEXT_COLUMNS = frozenset({"profile", "app", "workload"})


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def throughput_rows(doc: dict[str, Any]) -> Rows:
    header = ["profile", "workers", "app", "workload", "req/s", "p50 ms", "p99 ms", "errors"]
    labels = {w.key: w.label for w in WORKLOADS.values()}
    rows = []
    for p in doc["points"]:
        errors = p["failure"] if p["failure"] else str(p["errors"])
        rows.append(
            [
                p["profile"],
                str(p["workers"]),
                p["app"],
                labels.get(p["workload"], p["workload"]),
                _num(p["rps"], 0),
                _num(p["p50_ms"], 2),
                _num(p["p99_ms"], 2),
                errors,
            ]
        )
    return header, rows


def server_rows(doc: dict[str, Any]) -> Rows:
    header = [
        "profile",
        "workers",
        "ready s",
        "serving procs",
        "RSS/worker MB",
        "RSS growth MB",
        "GET / svc/bare",
        "svc quiet/bare",
        "svc/raw",
        "POST /echo svc/bare",
        "svc quiet/bare",
    ]
    ratio = {(r["profile"], r["workers"]): r for r in doc["ratios"]}
    rows = []
    for s in doc["servers"]:
        if s["app"] != "service":
            continue
        r = ratio.get((s["profile"], s["workers"]), {})
        rows.append(
            [
                s["profile"],
                str(s["workers"]),
                _num(s["ready_s"], 2),
                str(s["worker_processes"] or "—"),
                _num(s["rss_per_worker_mb"]),
                _num(s["growth_mb"]),
                _num(r.get("service_over_bare"), 2),
                _num(r.get("service_quiet_over_bare"), 2),
                _num(r.get("service_over_raw"), 2),
                _num(r.get("echo_service_over_bare"), 2),
                _num(r.get("echo_service_quiet_over_bare"), 2),
            ]
        )
    return header, rows


def layer_rows(doc: dict[str, Any]) -> Rows:
    """The in-process cost of each layer (bench/inprocess.py), per route."""
    layers = doc.get("layers_us") or {}
    routes = list(layers)
    names = list(dict.fromkeys(name for by_layer in layers.values() for name in by_layer))
    header = ["layer", *routes]
    rows = [[name, *(_num(layers[route].get(name), 1) for route in routes)] for name in names]
    return header, rows


def uneven_lines(doc: dict[str, Any]) -> list[str]:
    """Points measured again because one worker had taken (nearly) every connection."""
    labels = {w.key: w.label for w in WORKLOADS.values()}
    return [
        f"{p['profile']} x{p['workers']} {p['app']} {labels.get(p['workload'], p['workload'])}:"
        f" busiest worker's share of the CPU time {', '.join(f'{x:.2f}' for x in p['uneven_attempts'])}"
        f" -> measured again ({_num(p['busiest_worker_share'], 2)} kept)"
        for p in doc["points"]
        if p.get("uneven_attempts")
    ]


def failure_lines(doc: dict[str, Any]) -> list[str]:
    return [
        f"{s['profile']} x{s['workers']} {s['app']}: {s['failure']}" for s in doc["servers"] if s["failure"]
    ]


def print_tables(console: Console, doc: dict[str, Any]) -> None:
    for title, (header, rows) in (
        (
            f"Throughput — {doc['generator']}, {doc['plan']['connections']} connections, "
            f"{doc['plan']['duration_s']:g} s per point",
            throughput_rows(doc),
        ),
        (
            "Service app per profile (ratios of requests/s, same route code; svc: production defaults,"
            " svc quiet: access log off)",
            server_rows(doc),
        ),
        ("What each layer of the service costs, µs per request (in-process)", layer_rows(doc)),
    ):
        table = Table(title=title, title_justify="left")
        for index, name in enumerate(header):
            table.add_column(name, justify="left" if name in TEXT_COLUMNS else "right", no_wrap=index == 0)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for line in uneven_lines(doc):
        console.print(f"[yellow]uneven[/yellow] {line}")
    for line in failure_lines(doc):
        console.print(f"[red]failed[/red] {line}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows
    ]
    return "\n".join(lines)


def markdown(doc: dict[str, Any], chart_name: str | None) -> str:
    m, plan = doc["machine"], doc["plan"]
    software = ", ".join(f"{k} {v}" for k, v in doc["software"].items())
    parts = [
        "# Benchmark results",
        "",
        "Recorded with `make bench` (`python -m bench`). One run on a shared, noisy machine: compare",
        "profiles and apps within this run; the absolute numbers do not transfer to other machines.",
        "",
        "## Machine",
        "",
        f"- `nproc`: {m['nproc']} (usable by the service: {m['available_cpus']}, host: {m['host_cpus']})",
        f"- CPU: {m['cpu_model']}",
        f"- Python {m['python']}, {m['platform']}",
        f"- load average at start: {', '.join(str(x) for x in m['loadavg_at_start'])}",
        f"- software: {software}",
        "",
        "## Method",
        "",
        f"- load generator: {doc['generator']}, {plan['connections']} keep-alive connections,"
        f" {plan['warmup_s']:g} s warm-up then {plan['duration_s']:g} s per point;"
        f" whole run {doc['wall_time_s']:g} s",
        "- each profile launched as `python -m deploy <profile>` with `APP_WORKERS` = "
        + " and ".join(str(w) for w in plan["worker_counts"])
        + " at the production defaults (`APP_ENV=production`: JSON logs at level info, one access"
        " line per request, written to a file as the server's stdout); `service-quiet` is the same"
        " service with `APP_ACCESS_LOG=false`",
        f"- `GET /`: the servers of one profile and worker count run side by side and are measured in"
        f" {plan.get('rounds', 1)} rounds of {plan.get('round_duration_s', plan['duration_s']):g} s,"
        " each round every app once, one after the other; a point is its app's median round"
        " (every round's req/s is in the JSON), so one noisy moment cannot decide a ratio",
        "- apps: " + "; ".join(f"`{key}` = `{target}`" for key, target in plan["apps"].items()),
        "- `POST /echo` sends a ~2 KB JSON body; `GET /io` awaits `asyncio.sleep(0.01)`",
        "- errors: non-2xx/3xx responses plus socket errors (connect, read, write, timeout)",
        "- RSS/worker: mean RSS of the processes holding the listening socket, after the run;"
        " growth: their summed RSS after the run minus right after readiness",
        "- ready: launch to the first 200 from `GET /readyz`",
        "- uneven: with several workers, the connections opened at once can all land on one worker,"
        " which then serves the whole point alone; a CPU-bound point (`GET /`, `POST /echo`;"
        " `GET /io` is bound by its wait) whose busiest worker did"
        f" {UNEVEN_FACTOR:g} times its fair share of the workers' CPU time or more"
        f" ({UNEVEN_FACTOR / 2:.0%} with 2 workers) is measured again with new"
        f" connections, {MAX_ATTEMPTS} times at most, and listed under Uneven points",
        "",
    ]
    if chart_name:
        parts += [
            f"![throughput, p99 and memory per server: the service beside bare FastAPI]({chart_name})",
            "",
        ]
    parts += [
        "## Service app per profile",
        "",
        "Ratios of requests/s on `GET /` and `POST /echo` (the same route code in both apps):"
        " `svc/bare` is the service at the production defaults (access line on) over bare FastAPI,"
        " `svc quiet/bare` the service with the access log off.",
        "",
        markdown_table(*server_rows(doc)),
        "",
    ]
    if doc.get("layers_us"):
        parts += [
            "## What each layer costs",
            "",
            "Microseconds per request (per message for the WebSocket echo), the app called in-process"
            " (bench/inprocess.py: no server, 32 requests, or one message of each of 32 WebSocket"
            " sessions, per event-loop iteration, apps alternated, median round), measured at the start"
            " of this run. `bare FastAPI` is the whole app; each row below it is what one layer of the"
            " service adds.",
            "",
            markdown_table(*layer_rows(doc)),
            "",
        ]
    parts += ["## Throughput", "", markdown_table(*throughput_rows(doc)), ""]
    uneven = uneven_lines(doc) or ["none"]
    parts += ["## Uneven points", "", *(f"- {line}" for line in uneven), ""]
    failures = failure_lines(doc)
    if failures:
        parts += ["## Failures", "", *(f"- {line}" for line in failures), ""]
    return "\n".join(parts)
