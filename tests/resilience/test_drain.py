"""The drain window: SIGTERM under keep-alive load loses no request sent before the graceful stop.

With APP_DRAIN_SECONDS > 0, SIGTERM first turns /readyz to 503 and puts
`Connection: close` on every response while new connections are still served;
only then does the server's own graceful stop run. Without the window, every
server closes idle keep-alive connections at once, and a request a client sends
on one of them in that instant is lost: tests/resilience/test_rollout.py measures
what that costs behind a load balancer, with the window and without.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from deploy.profiles import PROFILES
from devkit.process import running_server
from tests.resilience.support import RESILIENCE_APP, Load, Report, summarize_errors, wait_workers

pytestmark = pytest.mark.resilience

CLIENTS = 16
WINDOW = 2
GRACEFUL = 5


def _lost(outcomes: list) -> list:  # type: ignore[type-arg]
    """Requests that reached the server and got no answer (a refused connection never did)."""
    return [o for o in outcomes if not o.ok and not (o.error or "").startswith("ConnectError")]


def _sigterm_under_load(profile: str, window: int, report: Report) -> tuple[list, dict[str, object]]:  # type: ignore[type-arg]
    env = {
        "APP_ASGI_APP": RESILIENCE_APP,
        "APP_WORKERS": "2",
        "APP_ACCESS_LOG": "false",
        "APP_DRAIN_SECONDS": str(window),
        "APP_GRACEFUL_TIMEOUT": str(GRACEFUL),
    }
    probe: dict[str, object] = {}
    with running_server(profile, env) as server:
        wait_workers(server, 2)
        load = Load(
            server.base_url, clients=CLIENTS, max_requests=50_000, max_seconds=window + 6, pause=0.002
        ).start()
        time.sleep(1.0)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        if window:
            time.sleep(min(0.5, window / 2))
            ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
            fresh = httpx.get(f"{server.base_url}/pid", timeout=5)  # a new connection, still served
            probe = {
                "readyz": ready.status_code,
                "fresh_status": fresh.status_code,
                "fresh_connection": fresh.headers.get("connection"),
            }
        code = server.wait_exit(timeout=window + GRACEFUL + 10)
        stopped = time.monotonic() - signalled
        outcomes = load.stop()  # the server is gone: what follows is refused connections
    lost = _lost(outcomes)
    # Sent before the graceful stop began: the window's promise. After it, the listener
    # closes and connections still in its accept queue are reset: clients that ignored
    # /readyz for the whole window are not protected (a load balancer would have moved).
    # A request counts from when it was written (whole, or else when its write began), not from
    # its start time: a client thread can wait for the GIL long after it took that (Outcome.sent).
    stop_begins = signalled + window
    protected = [o for o in lost if o.sent_by is not None and o.sent_by < stop_begins]
    report.add(
        f"sigterm_under_load[{profile}][drain={window}s]",
        requests=len(outcomes),
        lost_before_stop=len(protected),
        lost_after_stop=len(lost) - len(protected),
        errors=summarize_errors(outcomes),
        exit_code=code,
        stop_seconds=round(stopped, 2),
        **probe,
    )
    return protected, {"code": code, "stopped": stopped, **probe}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_drain_window_loses_no_request(profile: str, report: Report) -> None:
    lost, seen = _sigterm_under_load(profile, WINDOW, report)
    assert seen["readyz"] == 503
    assert seen["fresh_status"] == 200
    assert seen["fresh_connection"] == "close"
    assert seen["code"] == 0
    assert WINDOW <= float(seen["stopped"]) < WINDOW + GRACEFUL + 3  # type: ignore[arg-type]
    assert not lost, [o.error for o in lost][:5]
