"""A serving worker's garbage collector: what the worker loaded is not walked again, and the young
objects of requests in flight are not walked after every few requests.

CPython's cyclic collector walks every container object of the generations it collects. A worker
that has imported its server, FastAPI, pydantic and the app holds about 60,000 of them, and they live
as long as the worker. Under load, requests in flight keep promoting objects to the oldest
generation, so it is collected again and again: a granian worker serving `POST /echo` to 64
connections ran 4 full collections a second, 35 ms each, a seventh of its time; uvicorn's, a
fortieth. The young generation (700 net new container objects by default) is collected every few
requests, each time walking the objects of every request in flight.

`settle()` runs once the worker has imported the app, before it serves, in every profile's worker
(the adapters call it after loading the app, gunicorn's `post_worker_init` hook for both gunicorn
profiles): it collects what start-up left, then freezes what is left (`gc.freeze()`, Python's own
advice for servers: frozen objects are never walked again; they are not garbage, the app holds
them), and raises the young generation's threshold, so a collection runs when garbage builds up
(objects in reference cycles, which only the collector frees), not because requests are in flight.
Objects the app creates after start-up are collected as before.

A process that forks workers freezes what it holds first (`freeze_for_forking`: the supervisor's
fork server, deploy/fork_server_gc.py; gunicorn's arbiter, its public `pre_fork` hook), so the
workers' collections leave the pages they share with it shared.
"""

from __future__ import annotations

import gc

# Net new container objects before the young generation is collected (CPython's default: 700).
# With it at 7,000, 5 s of POST /echo on 64 connections ran 1 young collection on granian with bare
# FastAPI, 17 with the service, none on uvicorn: a collection runs when garbage in reference cycles
# builds up, or when the worker holds much more, not every few requests.
YOUNG_THRESHOLD = 10_000


def freeze_for_forking() -> None:
    """In a process about to fork workers: collect, then freeze what is left. A forked worker shares
    its parent's pages until it writes to them, and a collection writes to every object it walks:
    frozen objects are inherited frozen, so no worker's collection walks them. Only what is not
    frozen yet is walked here."""
    gc.collect()
    gc.freeze()


def settle() -> None:
    """Collect what start-up left, freeze the rest, raise the young generation's threshold."""
    freeze_for_forking()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
