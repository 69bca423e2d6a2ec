"""deploy/memory_limit.py: when a growing worker must be retired so that it never passes the limit."""

from __future__ import annotations

import os

from deploy.memory_limit import FIRST_BOOT_GUESS_SECONDS, MIB, BootTimes, MemoryTrend, MemoryWatch

LIMIT = 80 * MIB


def _trend(*samples: tuple[float, int]) -> MemoryTrend:
    trend = MemoryTrend()
    for at, mib in samples:
        trend.add(at, mib * MIB)
    return trend


def test_a_worker_not_yet_sampled_is_left_alone() -> None:
    assert not MemoryTrend().reaches(LIMIT, 10.0)


def test_a_steady_worker_is_retired_only_once_at_the_limit() -> None:
    assert not _trend((0.0, 79), (0.5, 79)).reaches(LIMIT, 60.0)
    assert _trend((0.0, 80), (0.5, 80)).reaches(LIMIT, 0.0)


def test_a_growing_worker_is_retired_when_it_would_pass_the_limit_before_its_replacement_serves() -> None:
    growing = _trend((0.0, 55), (0.5, 65))  # 20 MiB/s
    assert growing.bytes_per_second == 20 * MIB
    assert growing.projected(0.75) == 80 * MIB
    assert growing.reaches(LIMIT, 0.75)
    assert not growing.reaches(LIMIT, 0.7)


def test_a_leak_that_pauses_for_one_check_is_still_taken_as_growing() -> None:
    paused = _trend((0.0, 55), (0.5, 65), (1.0, 65))
    assert paused.bytes_per_second == 10 * MIB  # half the last rate, not zero
    assert paused.reaches(LIMIT, 1.5)
    settled = _trend((0.0, 55), (0.5, 65), (1.0, 65), (1.5, 65), (2.0, 65), (2.5, 65))
    assert settled.bytes_per_second == 1.25 * MIB  # halved at every check without growth


def test_shrinking_memory_is_no_growth() -> None:
    assert _trend((0.0, 70), (0.5, 60)).bytes_per_second == 0.0


def test_boot_estimate_follows_a_busier_machine_at_once_and_a_quieter_one_by_halves() -> None:
    boots = BootTimes()
    assert boots.estimate() == FIRST_BOOT_GUESS_SECONDS
    boots.learn(0.4)
    assert boots.estimate() == 0.4
    boots.learn(2.0)
    assert boots.estimate() == 2.0
    boots.learn(0.4)
    assert boots.estimate() == 1.2


def test_the_watch_names_the_workers_to_retire_and_forgets_those_gone() -> None:
    this = os.getpid()
    watch = MemoryWatch(limit_bytes=1)  # any live process is over it
    watch.trends[999_999_999] = MemoryTrend()  # a worker no longer serving
    retire = watch.to_retire([this, 999_999_998], lead=0.0)  # the second: no such process
    assert [pid for pid, _ in retire] == [this]
    assert "APP_MAX_WORKER_MEMORY=0 MiB" in retire[0][1]
    assert 999_999_999 not in watch.trends
    assert MemoryWatch(limit_bytes=1 << 50).to_retire([this], lead=1.0) == []
