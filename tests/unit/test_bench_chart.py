"""The benchmark chart: every server and workload of a run, service/bare from the input, README width,
a missing point marked rather than drawn as zero, and no text over another."""

from __future__ import annotations

import struct
from itertools import combinations
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.text import Text

from bench.chart import MISSING, draw, write_chart

# profile -> (service rps, bare rps): a distinct ratio per server (0.90, 1.20)
RATES = {"uvicorn": (900.0, 1000.0), "gunicorn-asgi": (600.0, 500.0)}
LATENCY = {"get": 5.0, "echo": 9.0, "ws": 3.0, "sse": None}


def _point(profile: str, app: str, workload: str, rps: float, p99: float | None) -> dict[str, Any]:
    return {"profile": profile, "workers": 2, "app": app, "workload": workload, "rps": rps, "p99_ms": p99}


def _document() -> dict[str, Any]:
    points = [
        _point(profile, app, workload, rps, p99)
        for profile, (service, bare) in RATES.items()
        for workload, p99 in LATENCY.items()
        for app, rps in (("service", service), ("bare", bare))
    ]
    points.remove(_point("gunicorn-asgi", "bare", "ws", 500.0, 3.0))  # a point the run could not measure
    points.append(_point("uvicorn", "service", "get", 50.0, 1.0) | {"workers": 1})  # another worker count
    servers = [{"profile": p, "workers": 2, "app": "service", "rss_per_worker_mb": 55.0} for p in RATES]
    return {
        "points": points,
        "servers": servers,
        "machine": {"nproc": 2, "cpu_model": "test"},
        "generator": "wrk",
    }


def _texts(figure: Figure) -> list[Text]:
    texts = [figure._suptitle] if figure._suptitle else []
    for legend in figure.legends:
        texts += [legend.get_title(), *legend.get_texts()]
    for ax in figure.axes:
        texts += [ax.title, *ax.get_xticklabels(), *ax.texts]
    return [text for text in texts if text.get_visible() and text.get_text()]


def _drawn(document: dict[str, Any]) -> Figure:
    figure = draw(document)
    assert figure is not None
    return figure


def test_every_server_and_workload_of_the_run_is_drawn_with_its_ratio() -> None:
    figure = _drawn(_document())
    strings = [text.get_text() for text in _texts(figure)]
    for profile in RATES:
        assert any(s.replace("\n", "") == profile for s in strings), profile
    for workload in ("GET /", "POST /echo", "WS /ws echo", "SSE /events fan-out"):
        assert any(s.startswith(workload) for s in strings), workload
    assert "2 workers per server (one per CPU" in strings[0]  # the largest count measured, said so
    # service/bare of the input, over its own server's pair: 4 workloads each, one pair lacking a side
    rate_axes = figure.axes[0::2][:4]
    ratios = [(t.get_text(), round(t.xy[0])) for ax in rate_axes for t in ax.texts if t.get_text() != MISSING]
    assert sorted(ratios) == sorted([("0.90", 0)] * 4 + [("1.20", 1)] * 3)


def test_a_missing_point_is_marked_not_drawn_as_zero() -> None:
    document = _document()
    document["points"] = [
        p for p in document["points"] if (p["profile"], p["workload"]) != ("uvicorn", "echo")
    ]
    strings = [text.get_text() for text in _texts(_drawn(document))]
    # uvicorn's echo pairs (throughput and p99, both sides), gunicorn-asgi's bare ws (both panels),
    # and the bare app's memory (not in the input) of both servers
    assert strings.count(MISSING) == 4 + 2 + 2


def test_the_chart_is_readme_wide_without_text_over_text(tmp_path: Path) -> None:
    figure = _drawn(_document())
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    page = figure.bbox
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in _texts(figure)]
    for name, box in boxes:
        assert page.contains(box.x0, box.y0), name
        assert page.contains(box.x1, box.y1), name
    for (one, a), (other, b) in combinations(boxes, 2):
        assert not a.overlaps(b), (one, other)

    path = tmp_path / "chart.png"
    assert write_chart(_document(), path)
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, _height = struct.unpack(">II", header[16:24])
    assert width == 830
    assert not write_chart({"points": []}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
