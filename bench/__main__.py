"""`python -m bench [--quick] [--profiles uvicorn,hypercorn] [--json PATH] [--png PATH] [--markdown PATH]`."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn

from bench import inprocess, machine, report, tables
from bench.chart import write_chart
from bench.load import LoadGenerator, Wrk
from bench.pyload import PythonLoad
from bench.runner import default_plan, run_plan
from deploy.profiles import PROFILES
from service.cpu import available_cpus

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_CONNECTIONS = 64


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    profiles = _profiles(args.profiles)
    generator = _generator(args.generator)
    plan = default_plan(profiles, available_cpus(), args.quick, args.duration, args.connections)
    estimate = plan.seconds + plan.servers * 1.5
    console.print(
        f"bench: {len(profiles)} profiles x {len(plan.worker_counts)} worker counts x {len(plan.apps)} apps"
        f" x up to {len(plan.workloads)} workloads = {plan.points} points, GET / and POST /echo in"
        f" {plan.rounds} rounds,"
        f" load generator: [bold]{generator.name}[/] (about {estimate / 60:.1f} min)"
    )
    # Ctrl-C and SIGTERM both unwind through the `finally` that stops every server by PID
    # (SIGINT explicitly: a shell may start a background job with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    console.print("bench: the cost of each layer of the service, in-process (about 30 s)")
    layers = inprocess.layer_table(inprocess.measure(rounds=5, batch=32, requests=6000))
    with Progress(
        SpinnerColumn(),
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=plan.points)

        def on_progress(description: str, done: bool) -> None:
            progress.update(task, description=description, advance=1 if done else 0)

        results = run_plan(plan, generator, on_progress)
    doc = report.document(
        machine=machine.describe(),
        software=machine.versions(),
        generator=generator.name,
        plan=plan,
        results=results,
        seconds=time.monotonic() - started,
        layers=layers,
    )
    tables.print_tables(console, doc)
    report.write_json(doc, args.json)
    outputs = [str(args.json)]
    png = args.png or args.json.with_suffix(".png")
    write_chart(doc, png)
    outputs.append(str(png))
    if args.markdown:
        chart_name = png.name if png.parent.resolve() == args.markdown.parent.resolve() else None
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(tables.markdown(doc, chart_name))
        outputs.append(str(args.markdown))
    console.print(f"wrote {', '.join(outputs)} in {doc['wall_time_s']:g} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark every server profile with the service, a bare FastAPI app and a raw ASGI app.",
    )
    parser.add_argument("--quick", action="store_true", help="1 worker, GET / only")
    parser.add_argument("--profiles", help=f"comma-separated subset of {','.join(PROFILES)} (default: all)")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (default: wrk if on PATH, else the Python one)",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds per point and per round of GET / (default 3, and 2 per round)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help=f"keep-alive connections (default {DEFAULT_CONNECTIONS})",
    )
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "latest.json", help="results file")
    parser.add_argument("--png", type=Path, help="chart of throughput, p99, memory (default: beside --json)")
    parser.add_argument("--markdown", type=Path, help="also write the tables and machine as Markdown")
    return parser


def _profiles(option: str | None) -> list[str]:
    if not option:
        return list(PROFILES)
    chosen = [name.strip() for name in option.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PROFILES]
    if unknown:
        raise SystemExit(f"bench: unknown profile(s) {', '.join(unknown)}; known: {', '.join(PROFILES)}")
    return chosen


def _generator(choice: str) -> LoadGenerator:
    executable = shutil.which("wrk")
    if choice == "python" or (choice == "auto" and executable is None):
        return PythonLoad()
    if executable is None:
        raise SystemExit("bench: wrk is not on PATH (apt-get install wrk), or use --generator python")
    return Wrk(executable)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; every server started was stopped", file=sys.stderr)
        sys.exit(130)
