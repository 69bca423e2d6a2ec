"""A PNG bar chart of requests/s per profile and app: one panel per (workload, worker count)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: must be chosen before pyplot is imported

import matplotlib.pyplot as plt

from bench.load import WORKLOADS

APP_ORDER = ("service", "service-quiet", "bare", "raw")


def write_chart(doc: dict[str, Any], path: Path) -> None:
    points = [p for p in doc["points"] if p["rps"] is not None]
    workloads = [w for w in WORKLOADS if any(p["workload"] == w for p in points)]
    worker_counts = sorted({p["workers"] for p in points})
    profiles = list(dict.fromkeys(p["profile"] for p in points))
    if not points:
        return
    rps = {(p["profile"], p["workers"], p["app"], p["workload"]): p["rps"] for p in points}
    fig, axes = plt.subplots(
        len(workloads),
        len(worker_counts),
        figsize=(5.5 * len(worker_counts), 3.6 * len(workloads)),
        squeeze=False,
    )
    width = 0.8 / len(APP_ORDER)
    for row, workload in enumerate(workloads):
        for col, workers in enumerate(worker_counts):
            ax = axes[row][col]
            for index, app in enumerate(APP_ORDER):
                heights = [rps.get((profile, workers, app, workload), 0.0) for profile in profiles]
                offsets = [x + (index - (len(APP_ORDER) - 1) / 2) * width for x in range(len(profiles))]
                ax.bar(offsets, heights, width, label=app)
            ax.set_xticks(range(len(profiles)), profiles)
            ax.set_title(f"{WORKLOADS[workload].label} — {workers} worker{'s' if workers > 1 else ''}")
            ax.set_ylabel("requests/s")
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(title="app")
    fig.suptitle(
        f"asgi-deploy — {doc['generator']}, {doc['machine']['nproc']} CPUs ({doc['machine']['cpu_model']})"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
