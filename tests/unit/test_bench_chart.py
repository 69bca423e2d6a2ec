"""The benchmark chart: every server and workload of a run, the ratio service/bare, README width."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from bench.chart import draw, write_chart

PROFILES = ("uvicorn", "granian")


def _point(profile: str, app: str, workload: str, rps: float, p99: float | None) -> dict[str, Any]:
    return {"profile": profile, "workers": 2, "app": app, "workload": workload, "rps": rps, "p99_ms": p99}


def _document() -> dict[str, Any]:
    points = [
        _point(profile, app, workload, rps, p99)
        for profile in PROFILES
        for workload, p99 in (("get", 5.0), ("echo", 9.0), ("ws", 3.0), ("sse", None))
        for app, rps in (("service", 900.0), ("bare", 1000.0))
    ]
    points.remove(_point("granian", "bare", "ws", 1000.0, 3.0))  # a point the run could not measure
    points.append(_point("uvicorn", "service", "get", 50.0, 1.0) | {"workers": 1})  # another worker count
    servers = [{"profile": p, "workers": 2, "app": "service", "rss_per_worker_mb": 55.0} for p in PROFILES]
    return {
        "points": points,
        "servers": servers,
        "machine": {"nproc": 2, "cpu_model": "test"},
        "generator": "wrk",
    }


def _texts(document: dict[str, Any]) -> list[str]:
    figure = draw(document)
    assert figure is not None
    texts = [figure.get_suptitle()]
    for ax in figure.axes:
        texts += [ax.get_title(), *(label.get_text() for label in ax.get_xticklabels())]
        texts += [text.get_text() for text in ax.texts]
    return texts


def test_every_server_and_workload_of_the_run_is_drawn_with_its_ratio() -> None:
    texts = _texts(_document())
    for profile in PROFILES:
        assert profile in texts
    for workload in ("GET /", "POST /echo", "WS /ws echo", "SSE /events fan-out"):
        assert any(text.startswith(workload) for text in texts), workload
    # service 900 / bare 1000, on each pair that has both sides; none where a side is missing
    assert texts.count("0.90") == 3 * 2 + 1
    assert "2 workers per server" in texts[0]


def test_the_chart_is_readme_wide_and_an_empty_run_draws_nothing(tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    write_chart(_document(), path)
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, _height = struct.unpack(">II", header[16:24])
    assert width == 830
    write_chart({"points": []}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
