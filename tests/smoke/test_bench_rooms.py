"""`make bench-rooms`'s quick mode on one profile, on a real Redis: the results have their shape, and
every message reached every member, in one order, on both apps. Speed is the bench's to report,
never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fanout
from tests.support.tools import require_tools

pytestmark = [pytest.mark.smoke, pytest.mark.demo_routes, pytest.mark.usefixtures("local_only")]


@pytest.mark.timeout(180)
def test_the_quick_fan_out_bench_delivers_every_message_to_every_member(tmp_path: Path) -> None:
    require_tools("redis-server", install="apt-get install redis-server")
    results, tables = tmp_path / "rooms.json", tmp_path / "rooms.md"
    argv = ["--quick", "--profiles", "uvicorn", "--json", str(results), "--markdown", str(tables)]
    assert fanout.main(argv) == 0
    doc = json.loads(results.read_text())
    plan = doc["plan"]
    assert (plan["instances"], plan["workers"], plan["rounds"]) == (2, 2, 1)
    sent = plan["paced_messages"] + plan["burst_messages"]
    assert [(run["app"], run["failure"]) for run in doc["runs"]] == [("service", None), ("bare", None)]
    (row,) = doc["summary"]
    for app in ("service", "bare"):
        figures = row[app]
        assert figures["failures"] == [], app
        assert (figures["sent"], figures["expected"]) == (sent, sent * plan["members"]), app
        assert (figures["delivered"], figures["lost"], figures["out_of_order"]) == (figures["expected"], 0, 0)
        for key in ("paced_p50_ms", "paced_p99_ms", "burst_deliveries_per_s", "recovery_s"):
            assert figures[key] is not None, (app, key)
    assert set(row["service_over_bare"]) == {
        "paced_p50_ms",
        "paced_p99_ms",
        "burst_deliveries_per_s",
        "recovery_s",
    }
    outages = [(o["profile"], set(o["recovery_s"])) for o in doc["outages"]]
    assert outages == [("uvicorn", {"service", "bare"})]
    every = f"{sent * plan['members']:,}/{sent * plan['members']:,}"
    assert f"| uvicorn | {every} | {every} |" in tables.read_text()
