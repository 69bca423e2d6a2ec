"""The fan-out bench's judgement (bench/fanout_load.py) and summary (bench/fanout_report.py), on
made-up deliveries: a loss, a different order or a repeat is counted; the first outage is the
recovery figure, the later ones are `again`."""

from __future__ import annotations

from typing import Any

from bench.fanout_load import Delivery, Phase, judge
from bench.fanout_report import summary


def got(*labels: str) -> list[Delivery]:
    return [Delivery(label[:-1], int(label[-1]), 0.001 * (i + 1), 10.0 + i) for i, label in enumerate(labels)]


def judged(*members: list[Delivery]) -> Phase:
    phase = Phase(sent=3)
    judge(phase, 9.0, list(members))
    return phase


def test_every_member_with_every_message_in_one_order_loses_nothing() -> None:
    phase = judged(got("ws0", "http1", "ws2"), got("ws0", "http1", "ws2"))
    assert (phase.expected, phase.delivered, phase.lost, phase.out_of_order) == (6, 6, 0, 0)
    assert phase.seconds == 3.0
    assert phase.p50_ms is not None


def test_a_loss_a_different_order_and_a_repeat_are_counted() -> None:
    assert judged(got("ws0", "http1", "ws2"), got("ws0", "ws2")).lost == 1
    assert judged(got("ws0", "http1", "ws2"), got("http1", "ws0", "ws2")).out_of_order == 1
    assert judged(got("ws0", "ws0", "ws2"), got("ws0", "ws0", "ws2")).out_of_order == 2


def run(app: str, p99: float, rate: float) -> dict[str, Any]:
    phase = {"sent": 10, "expected": 20, "delivered": 20, "lost": 0, "out_of_order": 0, "failure": None}
    return {
        "profile": "uvicorn",
        "app": app,
        "failure": None,
        "paced": {**phase, "p50_ms": 1.0, "p99_ms": p99},
        "burst": {**phase, "p99_ms": 9.0, "deliveries_per_s": rate},
    }


def test_the_summary_takes_median_rounds_and_the_first_outage_as_recovery() -> None:
    runs = [run("service", p99, 100.0 * p99) for p99 in (2.0, 8.0, 4.0)]
    runs += [run("bare", p99, 100.0 * p99) for p99 in (1.0, 2.0, 3.0)]
    outages = [
        {"profile": "uvicorn", "recovery_s": {"service": 0.1, "bare": 0.01}},
        {"profile": "uvicorn", "recovery_s": {"service": 0.3, "bare": 0.02}},
        {"profile": "uvicorn", "recovery_s": {"service": 0.5, "bare": None}},
    ]
    (row,) = summary(runs, outages)
    service = row["service"]
    assert (service["delivered"], service["expected"], service["lost"]) == (120, 120, 0)
    assert (service["paced_p99_ms"], service["recovery_s"], service["recovery_again_s"]) == (4.0, 0.1, 0.4)
    assert row["bare"]["recovery_again_s"] == 0.02
    assert row["service_over_bare"] == {
        "paced_p50_ms": 1.0,
        "paced_p99_ms": 2.0,
        "burst_deliveries_per_s": 2.0,
        "recovery_s": 10.0,
    }
