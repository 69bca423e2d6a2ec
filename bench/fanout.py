"""`python -m bench.fanout [--quick] [--profiles uvicorn,...] [--json PATH] [--markdown PATH]`: the rooms'
fan-out, the service against bare FastAPI with redis-py (bench/room_apps.py), on a real Redis.

Per profile, both apps run side by side, each as two instances of 2 workers sharing one
redis-server (devkit/redis.py, loopback). Each round, each app in turn (the first alternating):
WebSocket members on every worker of both instances plus an event stream on each, then
- paced: messages at a steady rate, alternately from a member's WebSocket on the first instance
  and a `POST` on the second: delivered/sent, order, publish-to-receipt p50/p99;
- burst: messages from one member as fast as it sends them: deliveries/s.
Then the outages: redis-server is killed and started again, and both apps are probed at once
until a new room session delivers across their instances again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import fanout_load, fanout_report, machine
from bench.__main__ import _profiles, _raise_interrupt
from bench.fanout_load import FanoutError, Member, Phase
from bench.servers import Server, ServerError, running_server
from devkit.redis import RedisServer

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bench"
WORKERS = 2
INSTANCES = 2
APPS = {
    # The service as users run it (production defaults, access line on), and bare FastAPI.
    "service": ("bench.apps:service", "/readyz"),
    "bare": ("bench.room_apps:bare_rooms", "/"),
}
ALL_WORKERS_SECONDS = 15.0
BROKER_SECONDS = 20.0


@dataclass(frozen=True)
class Plan:
    profiles: Sequence[str]
    rounds: int
    members_per_worker: int  # WebSockets; plus one event stream per instance
    paced_messages: int
    paced_rate: float
    burst_messages: int
    outages: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "profiles": list(self.profiles),
            "apps": {key: target for key, (target, _) in APPS.items()},
            "instances": INSTANCES,
            "workers": WORKERS,
            "websocket_members_per_worker": self.members_per_worker,
            "event_streams_per_instance": 1,
            "members": self.members,
            "rounds": self.rounds,
            "paced_messages": self.paced_messages,
            "paced_rate_per_s": self.paced_rate,
            "burst_messages": self.burst_messages,
            "outages": self.outages,
        }

    @property
    def members(self) -> int:
        return INSTANCES * (WORKERS * self.members_per_worker + 1)


def default_plan(profiles: Sequence[str], quick: bool) -> Plan:
    if quick:
        return Plan(profiles, 1, 1, paced_messages=40, paced_rate=200, burst_messages=100, outages=1)
    return Plan(profiles, 3, 2, paced_messages=200, paced_rate=200, burst_messages=500, outages=2)


@dataclass
class Run:
    profile: str
    app: str
    round: int
    paced: Phase | None = None
    burst: Phase | None = None
    failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "app": self.app,
            "round": self.round,
            "paced": None if self.paced is None else self.paced.as_dict(),
            "burst": None if self.burst is None else self.burst.as_dict(),
            "failure": self.failure,
        }


@dataclass
class Outage:
    profile: str
    number: int
    down_s: float  # killed until redis-server answered PING again
    recovery_s: dict[str, float | None] = field(default_factory=dict)  # per app, None: not within bound


@dataclass
class ProfileResult:
    runs: list[Run] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    servers: list[dict[str, Any]] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.redraw:
        fanout_report.redraw(args.json, args.markdown)
        return 0
    plan = default_plan(_profiles(args.profiles), args.quick)
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench.fanout: redis-server is not on PATH (apt-get install redis-server)")
    print(
        f"bench.fanout: {len(plan.profiles)} profiles x {len(APPS)} apps x {INSTANCES} instances"
        f" x {WORKERS} workers, {plan.members} members, {plan.rounds} rounds, {plan.outages} outages",
        flush=True,
    )
    started = time.monotonic()
    result = ProfileResult()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        redis = RedisServer(binary, Path(directory))
        redis.start()
        try:
            for profile in plan.profiles:
                measure_profile(profile, plan, redis, result, Clock(started))
        finally:
            redis.stop()
    doc = fanout_report.document(
        machine=machine.describe(),
        software={**machine.versions(), **fanout_report.broker_versions(binary)},
        plan=plan.as_dict(),
        runs=[run.as_dict() for run in result.runs],
        outages=[vars(outage) for outage in result.outages],
        servers=result.servers,
        seconds=time.monotonic() - started,
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    fanout_report.write_json(doc, args.json)
    outputs = [str(args.json)]
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(fanout_report.markdown(doc))
        outputs.append(str(args.markdown))
    print(fanout_report.summary_markdown(doc))
    print(f"wrote {', '.join(outputs)} in {doc['wall_time_s']:g} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, fewer members and messages, 1 outage")
    parser.add_argument("--profiles", help="comma-separated subset of the profiles (default: all)")
    parser.add_argument("--json", type=Path, default=DOCS / "rooms.json", help="results file")
    parser.add_argument("--markdown", type=Path, help="also write the tables and machine as Markdown")
    parser.add_argument(
        "--redraw", action="store_true", help="measure nothing: the summary and Markdown again from --json"
    )
    return parser


@contextlib.contextmanager
def started_apps(profile: str, redis: RedisServer) -> Iterator[dict[str, list[Server]]]:
    """Every app's instances, launched together, ready, every worker listening; stopped by PID."""
    with contextlib.ExitStack() as stack:
        settings = {"APP_BROKER_URL": redis.url}
        servers = {
            app: [
                stack.enter_context(running_server(profile, target, WORKERS, settings))
                for _ in range(INSTANCES)
            ]
            for app, (target, _) in APPS.items()
        }
        stack.callback(stop_together, [server for instances in servers.values() for server in instances])
        for app, instances in servers.items():
            for server in instances:
                server.wait_ready(APPS[app][1])
                deadline = time.monotonic() + ALL_WORKERS_SECONDS
                while len(server.worker_processes()) < WORKERS and time.monotonic() < deadline:
                    time.sleep(0.1)
        yield servers


def stop_together(servers: list[Server]) -> None:
    """SIGTERM to every server at once, then wait for each: they stop side by side, not in turn.
    Each server's own stop (by PID, SIGKILL after its timeout) still runs after this."""
    for server in servers:
        if server.process.poll() is None:
            server.signal(signal.SIGTERM)
    for server in servers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait_exit(server.stop_timeout)


@dataclass
class Clock:
    started: float

    def say(self, what: str) -> None:
        print(f"bench.fanout: {time.monotonic() - self.started:6.1f} s  {what}", flush=True)


def measure_profile(
    profile: str, plan: Plan, redis: RedisServer, result: ProfileResult, clock: Clock
) -> None:
    clock.say(f"{profile}: starting {len(APPS) * INSTANCES} servers")
    try:
        with started_apps(profile, redis) as servers:
            wait_broker(servers["service"])
            for number in range(plan.rounds):
                order = list(APPS) if number % 2 == 0 else list(reversed(APPS))
                for app in order:
                    clock.say(f"{profile}: {app} round {number + 1}")
                    result.runs.append(asyncio.run(measure_round(profile, app, number, servers[app], plan)))
            for number in range(plan.outages):
                clock.say(f"{profile}: outage {number + 1}")
                result.outages.append(asyncio.run(outage(profile, number, servers, redis)))
                wait_broker(servers["service"])
            clock.say(f"{profile}: stopping")
            for app, instances in servers.items():
                for index, server in enumerate(instances):
                    rss = server.worker_rss()
                    result.servers.append(
                        {
                            "profile": profile,
                            "app": app,
                            "instance": index,
                            "worker_processes": len(rss),
                            "rss_per_worker_mb": round(sum(rss) / len(rss) / 2**20, 1) if rss else None,
                        }
                    )
    except (ServerError, FanoutError, OSError) as error:
        result.runs.append(Run(profile, "service", -1, failure=f"{type(error).__name__}: {error}"))


def wait_broker(instances: list[Server]) -> None:
    """The service's readiness does not wait for the broker (docs/rooms.md): until every worker has it."""
    for server in instances:
        deadline = time.monotonic() + BROKER_SECONDS
        while connected_workers(server) < WORKERS:
            if time.monotonic() > deadline:
                raise FanoutError(f"{server.profile}: workers without the broker after {BROKER_SECONDS:g} s")
            time.sleep(0.05)


def connected_workers(server: Server) -> float:
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "rooms_broker_connected"
        )
    return 0.0


async def measure_round(profile: str, app: str, number: int, instances: list[Server], plan: Plan) -> Run:
    run = Run(profile, app, number)
    room = f"fan-{number}"
    members: list[Member] = []
    try:
        for server in instances:
            members += await fanout_load.members_per_worker(server, room, plan.members_per_worker, WORKERS)
        for server in instances:
            members.append(await fanout_load.open_event_stream(server, room))
        publisher = fanout_load.websocket_of(members[0])  # a member: it gets its own messages too
        room_base = f"{instances[-1].base_url}/rooms/{room}/"
        async with httpx.AsyncClient(base_url=room_base, timeout=10) as poster:
            run.paced = await fanout_load.paced(
                members, publisher, poster, count=plan.paced_messages, rate=plan.paced_rate
            )
        run.burst = await fanout_load.burst(members, publisher, plan.burst_messages)
    except (FanoutError, OSError, TimeoutError) as error:
        run.failure = f"{type(error).__name__}: {error}"
    finally:
        for member in members:
            with contextlib.suppress(Exception):  # a member already gone is closed already
                await member.close()
    return run


async def outage(profile: str, number: int, servers: dict[str, list[Server]], redis: RedisServer) -> Outage:
    """Kill redis-server, start it at once; probe every app at the same time until its rooms deliver."""
    killed = time.monotonic()
    redis.kill()
    await asyncio.to_thread(redis.start)
    seen = Outage(profile, number, round(time.monotonic() - killed, 3))
    recoveries = await asyncio.gather(
        *(fanout_load.until_delivers(first, second, f"back-{number}") for first, second in servers.values())
    )
    seen.recovery_s = {
        app: None if seconds is None else round(seconds, 3)
        for app, seconds in zip(servers, recoveries, strict=True)
    }
    return seen


if __name__ == "__main__":
    # Ctrl-C and SIGTERM both unwind through the `finally`s that stop every server and Redis by PID.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench.fanout: interrupted; every server started was stopped", file=sys.stderr)
        sys.exit(130)
