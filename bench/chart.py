"""The chart a newcomer reads: per workload, each server's throughput and p99 latency, the service
beside bare FastAPI with the ratio printed on each pair, and the memory of a worker.

Drawn from a `make bench` results document, at one worker count (the largest measured: the
machine's cores in use), 830 px wide so that it stays legible at README width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: must be chosen before pyplot is imported

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bench.load import WORKLOADS

WIDTH_INCHES, DPI = 8.3, 100  # 830 px: GitHub's README column
ROW_INCHES = 2.2
SHOWN = ("get", "echo", "ws", "sse")  # the newcomer's question; GET /io is in the tables
SIDES = (("service", "the service (production defaults)", "#1f77b4"), ("bare", "bare FastAPI", "#bbbbbb"))
RATE_UNIT = {"ws": "messages/s", "sse": "events/s"}


def write_chart(doc: dict[str, Any], path: Path) -> None:
    figure = draw(doc)
    if figure is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def draw(doc: dict[str, Any]) -> Figure | None:
    """The figure, or None when the document has no point to show."""
    points = [p for p in doc["points"] if p.get("rps") is not None]
    if not points:
        return None
    workers = max(p["workers"] for p in points)
    points = [p for p in points if p["workers"] == workers]
    profiles = list(dict.fromkeys(p["profile"] for p in points))
    workloads = [w for w in SHOWN if any(p["workload"] == w for p in points)]
    by_key = {(p["profile"], p["app"], p["workload"]): p for p in points}

    rows = len(workloads) + 1
    figure, axes = plt.subplots(
        rows, 2, figsize=(WIDTH_INCHES, ROW_INCHES * rows + 0.9), squeeze=False, layout="constrained"
    )
    for row, workload in enumerate(workloads):
        rate, latency = axes[row]
        _pairs(rate, profiles, by_key, workload, "rps", ratio=True)
        name = WORKLOADS[workload].label.split(" (")[0]
        rate.set_title(f"{name}: {RATE_UNIT.get(workload, 'requests/s')}", fontsize=9)
        if any(p.get("p99_ms") for p in points if p["workload"] == workload):
            _pairs(latency, profiles, by_key, workload, "p99_ms", ratio=False)
            latency.set_title(f"{name}: p99 latency, ms (lower is better)", fontsize=9)
        else:
            latency.axis("off")
            note = f"{name}: no latency figure\n(paced by the stream's interval)"
            latency.text(0.5, 0.5, note, ha="center", va="center", fontsize=9, transform=latency.transAxes)
    memory, legend = axes[-1]
    _memory(memory, profiles, doc.get("servers", []), workers)
    legend.axis("off")
    handles = [Rectangle((0, 0), 1, 1, color=color) for _, _, color in SIDES]
    legend.legend(
        handles,
        [label for _, label, _ in SIDES],
        loc="center",
        frameon=False,
        title="ratio over each pair: service / bare\n(throughput: higher is better)",
    )
    machine = doc.get("machine", {})
    figure.suptitle(
        f"asgi-deploy, {workers} worker{'s' if workers > 1 else ''} per server: one `make bench` run on "
        f"{machine.get('nproc', '?')} shared CPUs ({machine.get('cpu_model', '?')}), "
        f"{doc.get('generator', '')}",
        fontsize=9,
    )
    return figure


def _pairs(
    ax: Any,
    profiles: list[str],
    by_key: dict[tuple[str, str, str], Any],
    workload: str,
    field: str,
    *,
    ratio: bool,
) -> None:
    width = 0.38
    for index, (app, _, color) in enumerate(SIDES):
        values = [(by_key.get((profile, app, workload)) or {}).get(field) for profile in profiles]
        offsets = [x + (index - 0.5) * width for x in range(len(profiles))]
        ax.bar(offsets, [v or 0.0 for v in values], width, color=color)
    if ratio:
        for x, profile in enumerate(profiles):
            service = (by_key.get((profile, "service", workload)) or {}).get(field)
            bare = (by_key.get((profile, "bare", workload)) or {}).get(field)
            if service and bare:
                top = max(service, bare)
                ax.annotate(f"{service / bare:.2f}", (x, top), ha="center", va="bottom", fontsize=8)
        ax.margins(y=0.18)  # room for the ratios
    ax.set_xticks(range(len(profiles)), profiles, fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)


def _memory(ax: Any, profiles: list[str], servers: list[dict[str, Any]], workers: int) -> None:
    rss = {
        (s["profile"], s["app"]): s.get("rss_per_worker_mb")
        for s in servers
        if s.get("workers") == workers and s.get("rss_per_worker_mb") is not None
    }
    width = 0.38
    for index, (app, _, color) in enumerate(SIDES):
        values = [rss.get((profile, app)) or 0.0 for profile in profiles]
        ax.bar([x + (index - 0.5) * width for x in range(len(profiles))], values, width, color=color)
    ax.set_title("memory: resident MB per worker after the run (lower is better)", fontsize=9)
    ax.set_xticks(range(len(profiles)), profiles, fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
