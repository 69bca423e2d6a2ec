"""Small helpers shared by the adapters."""

from __future__ import annotations

import errno
import importlib
import importlib.util
import ipaddress
import pkgutil
import socket
from pathlib import Path
from typing import Any

from deploy import worker_gc
from service.settings import Settings, SettingsError, env_name

SHM_DIR = Path("/dev/shm")  # noqa: S108 - a tmpfs, not a world-writable temp dir we create files in


def bind_address(host: str, port: int) -> str:
    """`host:port`, with IPv6 literals bracketed as every server expects."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def binds(settings: Settings) -> list[str]:
    """APP_HOST and APP_PORT as the servers that take a list of `host:port` binds want them."""
    return [bind_address(settings.host, settings.port)]


def check_app_module(settings: Settings) -> None:
    """Refuse an APP_ASGI_APP whose module cannot be found, before any server starts.

    Each server would otherwise fail in its own way, most with a traceback from every
    worker. Only the module is looked up (its parent packages are imported): importing
    the app here would run it in the launcher, which gunicorn's workers then inherit.
    """
    module = settings.asgi_app.partition(":")[0]
    try:
        if importlib.util.find_spec(module) is not None:
            return
        problem = f"no module named {module!r}"
    except ImportError as error:  # a parent package is missing or fails to import
        problem = str(error)
    raise SettingsError(
        f"{env_name('asgi_app')}={settings.asgi_app!r}: {problem} "
        "(allowed: an import string `module:attribute` naming the ASGI app, importable from here)"
    )


# Why a bind fails, in words a newcomer can act on; anything else is reported as the OS says it.
BIND_PROBLEMS = {
    errno.EADDRINUSE: "another process listens there (stop it, or choose another {port})",
    errno.EACCES: "it needs privileges this process does not have (choose a {port} of 1024 or above)",
    errno.EADDRNOTAVAIL: "it is not an address of this host (choose one it has for {host}, or 0.0.0.0)",
}


def check_address(settings: Settings) -> None:
    """Refuse, in one line and at once, an address the server could not listen on.

    Each server would otherwise fail in its own way: some say nothing and exit 1, gunicorn
    retries for 5 s. The probe binds as the servers do (SO_REUSEADDR: a port held only by
    connections in TIME_WAIT is free) and closes again before any server starts.
    """
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise SettingsError(
            f"{env_name('host')}={settings.host!r} does not resolve ({error.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            problem = BIND_PROBLEMS.get(error.errno or 0, "{reason}")
            detail = problem.format(port=env_name("port"), host=env_name("host"), reason=error.strerror)
            raise SettingsError(
                f"cannot listen on {bind_address(settings.host, settings.port)}: {detail}"
            ) from None


def app_to_serve(target: Any) -> Any:
    """The app an import string `module:attribute` (APP_ASGI_APP) names, imported in the process
    that is about to serve it, or the app itself; then that process's heap is settled for serving
    (deploy/worker_gc.py)."""
    app = pkgutil.resolve_name(target) if isinstance(target, str) else target
    worker_gc.settle()
    return app
