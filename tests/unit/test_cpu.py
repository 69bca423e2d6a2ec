from __future__ import annotations

from pathlib import Path

import pytest

from service.cpu import available_cpus


def _v2_tree(root: Path, own: str, limits: dict[str, str]) -> Path:
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    for path, value in limits.items():
        directory = root / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.max").write_text(value + "\n")
    proc = root / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


@pytest.mark.parametrize(
    ("limits", "affinity", "expected"),
    [
        ({"/": "max 100000"}, 8, 8),  # no quota: affinity decides
        ({"/": "150000 100000"}, 8, 2),  # 1.5 CPUs rounds up
        ({"/": "50000 100000"}, 8, 1),  # half a CPU still gets one worker
        ({"/": "400000 100000"}, 3, 3),  # affinity tighter than the quota
        ({"/": "max 100000", "/kubepods": "200000 100000", "/kubepods/pod": "max 100000"}, 16, 2),
        ({"/kubepods": "800000 100000", "/kubepods/pod": "300000 100000"}, 16, 3),
        ({"/": "garbage"}, 4, 4),  # unreadable files are ignored, not fatal
    ],
    ids=[
        "unlimited",
        "fractional",
        "below-one",
        "affinity",
        "parent-limit",
        "child-limit",
        "garbage",
    ],
)
def test_cgroup_v2(tmp_path: Path, limits: dict[str, str], affinity: int, expected: int) -> None:
    proc = _v2_tree(tmp_path, "/kubepods/pod", limits)
    assert available_cpus(tmp_path, proc, affinity=affinity) == expected


@pytest.mark.parametrize(
    ("quota", "period", "affinity", "expected"),
    [("-1", "100000", 6, 6), ("200000", "100000", 6, 2), ("250000", "100000", 6, 3)],
)
def test_cgroup_v1(tmp_path: Path, quota: str, period: str, affinity: int, expected: int) -> None:
    cpu = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text(quota)
    (cpu / "cpu.cfs_period_us").write_text(period)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert available_cpus(tmp_path, proc, affinity=affinity) == expected


def test_no_cgroup_filesystem(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "absent", tmp_path / "absent-proc", affinity=5) == 5


def test_this_machine_gives_at_least_one() -> None:
    assert available_cpus() >= 1
