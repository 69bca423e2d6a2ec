"""The chart a newcomer reads: per workload, each server's throughput and p99 latency, the service
beside bare FastAPI with the ratio printed on each pair, and the memory of a worker.

Drawn from a `make bench` results document at one worker count, the largest measured (the bench
measures up to the machine's CPUs, which is the production default of `APP_WORKERS`), 830 px wide
so that it stays legible at README width. A point the run did not measure is marked "n/a", never
drawn as a zero. Redraw from a recorded run: `python -m bench.chart results.json chart.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: must be chosen before pyplot is imported

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bench.load import WORKLOADS

WIDTH_INCHES, DPI = 8.3, 100  # 830 px: GitHub's README column
ROW_INCHES = 2.1
TITLE_SIZE, LABEL_SIZE = 10, 8.5
SHOWN = ("get", "echo", "ws", "sse")  # the newcomer's question; GET /io is in the tables
SIDES = (
    ("service", "the service (production defaults)", "#1f77b4"),
    ("bare", "bare FastAPI (same routes, no middleware)", "#bbbbbb"),
)
RATE_UNIT = {"ws": "messages/s", "sse": "events/s"}
BAR_WIDTH = 0.38
MISSING = "n/a"
RATIO_NOTE = "number over each pair: service / bare throughput (1.00: the template costs nothing)"

Key = tuple[str, str, str]  # profile, app, workload


def write_chart(doc: dict[str, Any], path: Path) -> bool:
    """Whether there was a point to draw (nothing is written when there is none)."""
    figure = draw(doc)
    if figure is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return True


def draw(doc: dict[str, Any]) -> Figure | None:
    """The figure, or None when the document has no point to show."""
    points = [p for p in doc.get("points", []) if p.get("rps") is not None]
    if not points:
        return None
    workers = max(p["workers"] for p in points)
    points = [p for p in points if p["workers"] == workers]
    profiles = list(dict.fromkeys(p["profile"] for p in points))
    workloads = [w for w in SHOWN if any(p["workload"] == w for p in points)]
    by_key: dict[Key, dict[str, Any]] = {(p["profile"], p["app"], p["workload"]): p for p in points}
    with_latency = [w for w in workloads if any(p.get("p99_ms") for p in points if p["workload"] == w)]
    # memory takes the first latency slot a workload leaves free (a paced stream has no p99)
    free_slot = next((row for row, w in enumerate(workloads) if w not in with_latency), None)
    rows = max(len(workloads) + (free_slot is None), 1)

    figure, axes = plt.subplots(
        rows, 2, figsize=(WIDTH_INCHES, ROW_INCHES * rows + 1.1), squeeze=False, layout="constrained"
    )
    for row, workload in enumerate(workloads):
        rate, latency = axes[row]
        name = _name(workload)
        _pairs(rate, profiles, by_key, workload, "rps", ratio=True)
        paced = "" if workload in with_latency else " (paced: no p99)"
        rate.set_title(f"{name}: {RATE_UNIT.get(workload, 'requests/s')}{paced}", fontsize=TITLE_SIZE)
        if workload in with_latency:
            _pairs(latency, profiles, by_key, workload, "p99_ms", ratio=False)
            latency.set_title(f"{name}: p99 latency, ms (lower is better)", fontsize=TITLE_SIZE)
    memory_row = len(workloads) if free_slot is None else free_slot
    _memory(axes[memory_row][1], profiles, doc.get("servers", []), workers)
    if free_slot is None:
        axes[memory_row][0].axis("off")

    figure.legend(
        [Rectangle((0, 0), 1, 1, color=color) for _, _, color in SIDES],
        [label for _, label, _ in SIDES],
        loc="outside lower center",
        ncols=2,
        frameon=False,
        fontsize=LABEL_SIZE + 0.5,
        title=RATIO_NOTE,
        title_fontsize=LABEL_SIZE + 0.5,
    )
    figure.suptitle(_title(doc, workers), fontsize=TITLE_SIZE)
    return figure


def _name(workload: str) -> str:
    return WORKLOADS[workload].label.split(" (")[0]


def _title(doc: dict[str, Any], workers: int) -> str:
    machine = doc.get("machine", {})
    cpus = machine.get("available_cpus") or machine.get("nproc")
    per_cpu = " (one per CPU, the production default)" if workers == cpus else ""
    return (
        f"asgi-deploy beside bare FastAPI: {workers} worker{'s' if workers > 1 else ''} per server{per_cpu}\n"
        f"one `make bench` run on a shared machine, {cpus or '?'} CPUs ({machine.get('cpu_model', '?')}); "
        f"load: {doc.get('generator', '?')}"
    )


def _pairs(
    ax: Axes,
    profiles: Sequence[str],
    by_key: dict[Key, dict[str, Any]],
    workload: str,
    field: str,
    *,
    ratio: bool,
) -> None:
    values = {
        app: [(by_key.get((profile, app, workload)) or {}).get(field) for profile in profiles]
        for app, _, _ in SIDES
    }
    _bars(ax, profiles, values)
    if ratio:
        service, bare = values["service"], values["bare"]
        for x, (mine, theirs) in enumerate(zip(service, bare, strict=True)):
            if mine and theirs:
                ax.annotate(
                    f"{mine / theirs:.2f}",
                    (x, max(mine, theirs)),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=LABEL_SIZE,
                    fontweight="bold",
                )
        ax.margins(y=0.2)  # room for the ratios under the frame's top


def _memory(ax: Axes, profiles: Sequence[str], servers: list[dict[str, Any]], workers: int) -> None:
    rss = {
        (s["profile"], s["app"]): s.get("rss_per_worker_mb") for s in servers if s.get("workers") == workers
    }
    _bars(ax, profiles, {app: [rss.get((profile, app)) for profile in profiles] for app, _, _ in SIDES})
    ax.set_title("memory: MB resident per worker", fontsize=TITLE_SIZE)


def _bars(ax: Axes, profiles: Sequence[str], values: dict[str, list[float | None]]) -> None:
    """One pair of bars per profile; a value the run lacks is written "n/a" where its bar would be."""
    for index, (app, _, color) in enumerate(SIDES):
        for x, value in enumerate(values[app]):
            offset = x + (index - 0.5) * BAR_WIDTH
            if value is None:
                ax.text(offset, 0, MISSING, ha="center", va="bottom", rotation=90, fontsize=LABEL_SIZE - 1)
            else:
                ax.bar(offset, value, BAR_WIDTH, color=color)
    ax.set_xticks(range(len(profiles)), [_short(p) for p in profiles], fontsize=LABEL_SIZE)
    ax.tick_params(axis="y", labelsize=LABEL_SIZE)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _short(profile: str) -> str:
    # "gunicorn-asgi" is wider than its slot at README width; break it where it already breaks
    return profile.replace("-", "-\n", 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chart", description=__doc__)
    parser.add_argument("results", type=Path, help="a results document written by `make bench`")
    parser.add_argument("png", type=Path, help="the chart to write")
    args = parser.parse_args(argv)
    if not write_chart(json.loads(args.results.read_text()), args.png):
        print(f"{args.results}: no measured point to draw", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
