"""Hypercorn profile.

Fast path: the uvloop worker class. Measured on 2 cores, the asyncio worker
class let one of two workers accept all 64 connections of a load test; uvloop
spread them and doubled throughput.

Several workers run under deploy/supervisor.py rather than `hypercorn.run`'s loop
(which kills busy workers on shutdown, ignores SIGHUP and stops when one worker dies).
"""

from __future__ import annotations

import asyncio
import logging
from multiprocessing.synchronize import Event as EventType
from typing import Any, cast

from hypercorn.asyncio import run as hypercorn_asyncio_run
from hypercorn.asyncio.run import uvloop_worker
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config, Sockets
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, FrameTooLargeError, WSStream
from hypercorn.run import run as hypercorn_run
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

from deploy.common import bind_address
from deploy.profile import NO_PING_TIMEOUT, Native, Profile, Refused
from deploy.supervisor import (
    APP_LIBRARIES,
    HEARTBEAT_SECONDS,
    READY,
    RETIRING,
    SUPERVISED_SETTINGS,
    SUPERVISOR_KEY,
    Supervisor,
    WorkerLink,
    needs_supervisor,
    supervisor_options,
)
from service.logs import log_config
from service.settings import Settings
from service.versions import require

require(
    "hypercorn",
    ">=0.18,<0.19",
    "deploy/hypercorn.py (WorkerContext, worker_serve's lookup of it; WSStream's event loop,"
    " its answer to a peer's close frame and the h11 protocol's lookup of it)",
)

# A new worker reports READY once it serves; an old one it replaces stops then, or after
# this long without the report (a worker that failed to boot stops the server).
WORKER_BOOT_BOUND_SECONDS = 30.0
# What a worker imports of hypercorn, imported once by the supervisor's fork server.
WORKER_LIBRARIES = (*APP_LIBRARIES, "hypercorn.asyncio.run", "hypercorn.config", "wsproto")


def native_config(settings: Settings) -> dict[str, Any]:
    supervised = settings.workers > 1 or needs_supervisor(settings)
    return {
        "application_path": settings.asgi_app,
        "bind": [bind_address(settings.host, settings.port)],
        # workers=0 serves in this process (it gets the signals directly); recycling or
        # watching workers needs the supervisor, even for a single worker.
        "workers": settings.workers if supervised else 0,
        "worker_class": "uvloop",
        "loglevel": settings.log_level.upper(),
        "logconfig_dict": log_config(settings),
        "accesslog": None,  # the app writes access lines (service/access_log.py)
        # A Logger (not "-") so hypercorn keeps the handlers logconfig_dict gives it.
        "errorlog": logging.getLogger("hypercorn.error"),
        # One timer covers both a connection's wait for its first request head and the idle
        # time between requests (it runs until a head is complete, whatever bytes arrive):
        # the shorter of the two settings, so neither deadline is ever exceeded.
        "keep_alive_timeout": min(settings.keepalive_timeout, settings.request_head_timeout),
        "graceful_timeout": settings.graceful_timeout,
        "max_requests": settings.max_requests or None,
        "max_requests_jitter": settings.max_requests_jitter,
        "root_path": "",  # applied by the app, see service/app.py
        "include_server_header": False,
        "websocket_max_message_size": settings.ws_max_message_bytes,  # beyond it: close 1009
        "websocket_ping_interval": settings.ws_ping_interval,
        "use_reloader": False,
        SUPERVISOR_KEY: supervisor_options(settings),  # deploy/supervisor.py, when it runs the workers
    }


def build_config(settings: Settings) -> Config:
    config = Config()
    for key, value in native_config(settings).items():
        if key != SUPERVISOR_KEY:
            setattr(config, key, value)
    return config


def run(settings: Settings) -> int:
    config = build_config(settings)
    pass_ending_close_codes()
    if config.workers == 0:
        return hypercorn_run(config)
    sockets = config.create_sockets()

    def close_sockets() -> None:
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()

    return Supervisor(
        server="hypercorn",
        workers=config.workers,
        target=_worker,
        target_kwargs={"config": config, "sockets": sockets},
        graceful_timeout=config.graceful_timeout,
        boot_seconds=WORKER_BOOT_BOUND_SECONDS,
        metrics_dir=settings.metrics_dir,
        close_sockets=close_sockets,
        preload=WORKER_LIBRARIES,
        **supervisor_options(settings),
    ).run()


def _worker(link: WorkerLink, *, config: Config, sockets: Sockets) -> None:
    pass_ending_close_codes()  # a spawned process: the launcher's patch is not inherited
    # hypercorn's worker_serve builds its WorkerContext once the app's lifespan has started, right
    # before it serves the sockets, and counts every request through it: the one place to report
    # READY and RETIRING. This spawned process runs this worker only: point the name at ours.
    ReportingWorkerContext.link = link
    setattr(hypercorn_asyncio_run, "WorkerContext", ReportingWorkerContext)  # noqa: B010 - not re-exported
    # hypercorn only polls `shutdown_event.is_set()` (utils.check_multiprocess_shutdown_event).
    stop = StopTellingTheApp(link.stop)
    uvloop_worker(config=config, sockets=sockets, shutdown_event=cast(EventType, stop))


class StopTellingTheApp:
    """The supervisor's stop flag, as hypercorn polls it on the worker's loop; when it is first
    seen set, the app's long-lived connections are told (no signal reaches a supervised worker)."""

    def __init__(self, flag: Any) -> None:
        self.flag = flag
        self.told = False

    def is_set(self) -> bool:
        stopping = bool(self.flag.is_set())
        if stopping and not self.told:
            self.told = True
            stop_long_lived_connections()
        return stopping


class ReportingWorkerContext(WorkerContext):
    """hypercorn's per-worker context, reporting to the supervisor instead of exiting at the limit.

    At APP_MAX_REQUESTS (+ jitter) the worker says RETIRING and serves on; the supervisor sets
    its stop flag once the replacement is ready, so the socket always has a worker accepting.
    """

    link: WorkerLink

    def __init__(self, max_requests: int | None) -> None:
        super().__init__(max_requests)
        self.retiring = False
        self.link.report(READY)
        # Built inside the worker's running loop; the task lives as long as the loop does.
        self.heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            self.link.beat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def mark_request(self) -> None:
        if self.max_requests is None or self.retiring:
            return
        self.requests += 1
        if self.requests > self.max_requests:
            self.retiring = True
            self.link.report(RETIRING)


def stop_long_lived_connections() -> None:
    """Tell the app's WebSockets and event streams the graceful stop has begun (service/realtime.py)."""
    from service.realtime import stop_all  # noqa: PLC0415 - imported by the app anyway; not by the launcher

    stop_all()


# Two mends to hypercorn's WebSocket stream, within the version range this module requires (see
# the top). It reports a peer's close frame to the app as 1006 (abnormal closure): it answers the
# frame and ends the stream, and every end of a connected socket then looks alike. And a frame
# wsproto cannot take (a text message that is not UTF-8: 1007; a protocol error: 1002) ends the
# connection without any close frame: wsproto reports it as a CloseConnection event with the code
# the connection must be failed with (RFC 6455 7.1.7) and leaves it open, and hypercorn only
# answers close frames a peer sent.
def pass_ending_close_codes() -> None:
    """Have hypercorn's HTTP/1.1 protocol use PeerCloseCodeWSStream."""
    from hypercorn.protocol import h11  # noqa: PLC0415

    setattr(h11, "WSStream", PeerCloseCodeWSStream)  # noqa: B010 - the name h11.py looks up


class PeerCloseCodeWSStream(WSStream):
    """hypercorn's WebSocket stream, telling the app the close code its connection ended with:
    its peer's, or the one it was failed with on a frame wsproto could not take."""

    ending_close_code: int | None = None

    async def _send_wsproto_event(self, event: Any) -> None:
        # hypercorn answers a peer's close frame with its response(), which carries the peer's code.
        if isinstance(event, CloseConnection) and self.connection.state == ConnectionState.REMOTE_CLOSING:
            self.ending_close_code = event.code
        await super()._send_wsproto_event(event)

    async def _handle_events(self) -> None:
        # hypercorn's loop (hypercorn/protocol/ws_stream.py), plus the first branch.
        for event in self.connection.events():
            if isinstance(event, CloseConnection) and self.connection.state == ConnectionState.OPEN:
                # No peer sent this close: wsproto failed a frame, and says with which code.
                await self._send_wsproto_event(CloseConnection(code=event.code))
                self.ending_close_code = event.code
                await self.send(StreamClosed(stream_id=self.stream_id))
                return
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    await self._send_wsproto_event(CloseConnection(code=CloseReason.MESSAGE_TOO_BIG))
                    break
                if event.message_finished and self.app_put is not None:  # set with the handshake
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    async def handle(self, event: Any) -> None:
        if (
            isinstance(event, StreamClosed)
            and not self.closed
            and self.app_put is not None
            and self.ending_close_code is not None
            and self.state == ASGIWebsocketState.CONNECTED
        ):
            self.closed = True
            await self.app_put({"type": "websocket.disconnect", "code": self.ending_close_code})
            return
        await super().handle(event)


PROFILE = Profile(
    name="hypercorn",
    summary="Hypercorn's uvloop worker; several workers under deploy/supervisor.py",
    settings={
        "asgi_app": Native("application_path"),
        "host": Native("bind", "`host:port`, IPv6 bracketed"),
        "port": Native("bind"),
        "workers": Native("workers", "0 (in process) for one worker without recycling"),
        "log_level": Native("loglevel", "upper case"),
        "log_format": Native("logconfig_dict", "service/logs.py's one dictConfig"),
        "keepalive_timeout": Native("keep_alive_timeout", "one idle timer: the shorter with the head one"),
        "request_head_timeout": Native("keep_alive_timeout", "one idle timer: the shorter with keep-alive"),
        "graceful_timeout": Native("graceful_timeout"),
        "max_requests": Native("max_requests", "the supervisor starts the replacement first"),
        **SUPERVISED_SETTINGS,
        "ws_max_message_bytes": Native("websocket_max_message_size", "beyond it: close 1009"),
        "ws_ping_interval": Native("websocket_ping_interval"),
        "ws_ping_timeout": Refused(f"hypercorn {NO_PING_TIMEOUT}"),
        "max_requests_jitter": Native("max_requests_jitter"),
    },
    build=native_config,
    serve=run,
)
