"""What a worker of each profile loads, checked in a fresh interpreter: no server it does not run."""

from __future__ import annotations

import subprocess
import sys

import pytest

# What a worker of each profile imports: the launcher, the adapter, the worker class and the app.
WORKER_IMPORTS = {
    "hypercorn": "deploy.hypercorn",
    "granian": "deploy.granian",
    "gunicorn-asgi": "deploy.gunicorn_asgi, deploy.gunicorn_internals",
}


@pytest.mark.parametrize("profile", sorted(WORKER_IMPORTS))
def test_workers_of_other_servers_do_not_load_uvicorn(profile: str) -> None:
    # uvicorn's package imports its server and click: about 3 MB of RSS in each worker
    # that never runs it (service/forwarded.py, deploy/gunicorn_app.py).
    code = (
        f"import sys, deploy.__main__, {WORKER_IMPORTS[profile]}, service.main;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'uvicorn', 'uvicorn_worker', 'click'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("h3", [False, True])
def test_hypercorn_loads_the_quic_library_only_to_serve_h3(h3: bool) -> None:
    # aioquic and its codecs cost about 13 MB of RSS in each process; `make run` installs the
    # `http3` extra, so a hypercorn worker serving HTTP/1.1 and h2 would carry them for nothing.
    code = (
        "import sys; from deploy import hypercorn_internals;"
        f"hypercorn_internals.install(h3={h3}); print('aioquic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == str(h3)
