"""The serving worker's garbage collector (deploy/worker_gc.py), settled in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from deploy.worker_gc import YOUNG_THRESHOLD

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
