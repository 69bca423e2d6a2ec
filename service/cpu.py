"""How many CPUs this process may really use.

`os.cpu_count()` reports the host's cores. In a container with a CPU limit that
is the wrong number for sizing a worker pool: a pod limited to 1 CPU on a
64-core node would start 64 workers and be throttled. The answer here is the
smallest of the CPU affinity mask and the CFS quota of every cgroup on the path
from this process's cgroup to the root (cgroup v2 `cpu.max`, or v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")

_QuotaReader = Callable[[Path], float | None]


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
    affinity: int | None = None,
) -> int:
    """CPUs usable by this process: min(affinity, cgroup quota), at least 1."""
    limits = [affinity if affinity is not None else _affinity_cpus()]
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        limits.append(math.ceil(quota))
    return max(1, min(limits))


def cgroup_cpu_quota(cgroup_root: Path, proc_self_cgroup: Path) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup path, or None if unlimited."""
    v2_path, v1_path = _own_cgroup_paths(proc_self_cgroup)
    if (cgroup_root / "cgroup.controllers").exists():
        return _tightest(cgroup_root, v2_path or "/", _read_v2_quota)
    for controller_dir in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        base = cgroup_root / controller_dir
        if base.is_dir():
            return _tightest(base, v1_path or "/", _read_v1_quota)
    return None


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _own_cgroup_paths(proc_self_cgroup: Path) -> tuple[str | None, str | None]:
    """Parse /proc/self/cgroup into (v2 path, v1 cpu-controller path)."""
    v2_path: str | None = None
    v1_path: str | None = None
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and controllers == "":
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_path = path
    return v2_path, v1_path


def _tightest(base: Path, own_path: str, read_quota: _QuotaReader) -> float | None:
    """Walk from our cgroup up to the root of `base`, keeping the smallest quota.

    Inside a container the cgroup namespace usually makes our own cgroup look
    like the root, so the root itself is always checked too.
    """
    relative = Path(own_path.lstrip("/"))
    candidates = [base / relative, *(base / parent for parent in relative.parents)]
    quotas = [q for q in (read_quota(c) for c in candidates if c.is_dir()) if q is not None]
    return min(quotas) if quotas else None


def _read_v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return _ratio(quota, period)


def _read_v1_quota(directory: Path) -> float | None:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us
