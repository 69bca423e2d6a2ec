"""What a process holds in memory to write later is written when the process ends, however it ends.

The access lines (service/log_writer.py) and the request metrics (service/multiprocess_metrics.py)
are written once per event-loop iteration; a worker that ends within an iteration still holds
some. Two exits reach them:
- `atexit`, a normal interpreter exit: uvicorn's, hypercorn's and gunicorn's workers leave
  through `sys.exit`;
- multiprocessing's exit finalizers: granian's workers are multiprocessing processes, which end
  with `os._exit` and skip `atexit`. Such a child starts with an empty finalizer registry, so
  the finalizer is registered in each process (`arm_for_this_process`), the first time it holds
  something.

Both may run in one process (a normal exit runs multiprocessing's finalizers from `atexit`): the
flushes run at the first.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.util
import os
from collections.abc import Callable

_flushes: list[Callable[[], None]] = []
_armed_in = 0  # the process whose finalizer registry has ours
_flushed_in = 0  # the process that has run the flushes


def run_at_exit(flush: Callable[[], None]) -> None:
    """Call `flush` when this process ends (after the ones registered before it)."""
    _flushes.append(flush)


def arm_for_this_process() -> None:
    """Make sure the flushes run in this process also when it ends through multiprocessing's
    finalizers and `os._exit` (a granian worker); cheap after the first call in a process."""
    global _armed_in  # noqa: PLW0603
    pid = os.getpid()
    if _armed_in != pid:
        _armed_in = pid
        multiprocessing.util.Finalize(None, _flush_all, exitpriority=1)


def _flush_all() -> None:
    global _flushed_in  # noqa: PLW0603
    pid = os.getpid()
    if _flushed_in == pid:
        return
    _flushed_in = pid
    for flush in _flushes:
        with contextlib.suppress(Exception):  # the process is ending: the next flush still runs
            flush()


atexit.register(_flush_all)
