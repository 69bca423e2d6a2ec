"""The serving worker's garbage collector (deploy/worker_gc.py), settled in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from deploy.gunicorn_app import gunicorn_options
from deploy.gunicorn_hooks import pre_fork
from deploy.worker_gc import YOUNG_THRESHOLD
from service.settings import Settings

PROBE = textwrap.dedent(
    """
    import gc, json, weakref
    import service.main  # what a worker has loaded when it settles: the app and its libraries
    from deploy import worker_gc

    class Node:
        pass

    def garbage_cycle():
        node = Node()
        node.itself = node
        return weakref.ref(node)

    before = gc.get_threshold()
    left_by_startup = garbage_cycle()
    worker_gc.settle()
    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    made_while_serving = garbage_cycle()
    gc.collect()
    print(json.dumps({
        "before": before,
        "threshold": threshold,
        "frozen": frozen,
        "startup_garbage_freed": left_by_startup() is None,
        "later_garbage_freed": made_while_serving() is None,
    }))
    """
)


def test_settle_freezes_what_the_worker_loaded_and_raises_only_the_young_threshold() -> None:
    command = [sys.executable, "-c", PROBE]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    result = json.loads(out.stdout)
    # The app, FastAPI and pydantic: tens of thousands of objects a full collection no longer walks.
    assert result["frozen"] > 20_000
    assert result["threshold"] == [YOUNG_THRESHOLD, *result["before"][1:]]
    assert result["before"][0] < YOUNG_THRESHOLD
    # Garbage that start-up left in a reference cycle is freed, not frozen; later garbage still is.
    assert result["startup_garbage_freed"]
    assert result["later_garbage_freed"]


FORKED_PROBE = textwrap.dedent(
    """
    import gc, multiprocessing, sys
    from deploy.supervisor import APP_LIBRARIES, FORK_SERVER_GC

    def report(queue):
        queue.put(gc.get_freeze_count())  # before the worker does anything: what it inherited

    if __name__ == "__main__":
        preload = [*APP_LIBRARIES, FORK_SERVER_GC] if sys.argv[1] == "frozen" else list(APP_LIBRARIES)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(preload)
        queue = context.Queue()
        worker = context.Process(target=report, args=(queue,))
        worker.start()
        print(queue.get(timeout=60))
        worker.join(timeout=30)
    """
)


def _inherited_frozen(tmp_path: Path, preload: str) -> int:
    script = tmp_path / "forked_probe.py"  # a file: the fork server's workers import their target from it
    script.write_text(FORKED_PROBE)
    out = subprocess.run(
        [sys.executable, str(script), preload], capture_output=True, text=True, check=True, timeout=90
    )
    return int(out.stdout.strip())


def test_workers_of_the_supervisors_fork_server_inherit_its_libraries_frozen(tmp_path: Path) -> None:
    # Frozen in the fork server, the libraries' objects are never walked by a worker's collection:
    # their pages stay shared with the fork server and the other workers.
    assert _inherited_frozen(tmp_path, "frozen") > 20_000
    assert _inherited_frozen(tmp_path, "as multiprocessing leaves it") == 0


def test_an_app_given_as_an_object_is_served_settled_too() -> None:
    code = (
        "import gc; from deploy.common import app_to_serve; app = object(); assert app_to_serve(app) is app; "
    )
    code += "print(gc.get_freeze_count(), gc.get_threshold()[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    frozen, young = map(int, out.stdout.split())
    assert frozen > 10_000
    assert young == YOUNG_THRESHOLD


def test_the_fork_servers_freeze_imports_nothing_of_the_projects() -> None:
    # The fork server's modules are every worker's: one of ours there would outlive a SIGHUP reload.
    ours = "(m for m in sys.modules if m.startswith(('deploy', 'service')))"
    code = f"import sys, deploy.fork_server_gc; print(*{ours})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert sorted(out.stdout.split()) == ["deploy", "deploy.fork_server_gc"]


def test_gunicorns_arbiter_freezes_its_heap_before_it_forks_a_worker() -> None:
    code = "import gc, deploy.gunicorn_hooks as h; h.pre_fork(None, None); print(gc.get_freeze_count())"
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    assert int(out.stdout) > 10_000
    options = gunicorn_options(Settings(env="production"), "uvicorn_worker.UvicornWorker")
    assert options["pre_fork"] is pre_fork
