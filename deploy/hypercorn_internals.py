"""Everything of hypercorn's that is not its public API, in one place: four carried patches.

`WEBSOCKET_CLOSE_CODES`: hypercorn 0.18's WebSocket stream tells the app that every connected
socket ended with 1006 (abnormal closure), even when the peer sent a close frame with its own
code: it answers the frame and ends the stream, and every end then looks alike. And a frame
wsproto cannot take (a text message that is not UTF-8: 1007; a protocol error: 1002) ends the
connection without any close frame: wsproto reports it as a CloseConnection event with the code
the connection must be failed with (RFC 6455 7.1.7) and leaves it open, and hypercorn only
answers close frames a peer sent. `close_code_stream()` mends both; `install()` has hypercorn's
HTTP/1.1 protocol build it, inside the tested range only.

`H3_LATE_BODY`: hypercorn 0.18's HTTP/3 protocol forgets a stream once its response is sent, and
a piece of that request's body arriving afterwards (a 413 answered from Content-Length, a 404 to
a POST) raises KeyError out of its one QUIC datagram loop: HTTP/3 stops for the whole process.
`late_body_h3_protocol()` drops such data instead; `install(h3=True)` has hypercorn's QUIC protocol
use it, inside the tested range, in the one process that serves h3 (nowhere else is aioquic loaded).

`ACCEPT_SETTLE`: a supervised worker's stop (deploy/hypercorn.py's shutdown trigger) ends
with hypercorn 0.18's worker_serve closing, at once, every connection idle awaiting a request,
then its listeners, then waiting only for connections whose TLS handshake is done: one accepted an
instant before, its handshake or first request still on its way, is cut while the replacement
worker serves. hypercorn keeps its listeners to itself; it makes them with the running loop's
`create_server`. `ListenerRecordingLoop`, the worker's loop, keeps them, and `settle_accepted()`,
called by the trigger before it returns, closes them and lets what they accepted settle
(ACCEPTED_SETTLE_SECONDS). No private name is touched, but the fix rests on how worker_serve
stops, hence the tested range; outside it the worker runs on uvloop's own loop.

`H3_PROMPT_STOP`: hypercorn 0.18's QUIC loop (UDPServer.run) looks at its stop flag only when a
datagram arrives, so a stop with no QUIC traffic left waited for APP_GRACEFUL_TIMEOUT.
`wake_quic_listeners()`, started by the one-process server's stop (deploy/hypercorn.py), sends the
listeners an empty datagram, which hypercorn drops, every QUIC_WAKE_SECONDS until the loop ends.

Nothing else: READY/RETIRING reports, the heartbeat and the stop of a supervised worker go
through hypercorn's public `serve()` and an ASGI wrapper (deploy/hypercorn.py, deploy/reporting_app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from typing import Any

import uvloop

from deploy.carried import CarriedPatch
from deploy.worker_timing import ACCEPTED_SETTLE_SECONDS

MODULE = "deploy/hypercorn_internals.py"

WEBSOCKET_CLOSE_CODES = CarriedPatch(
    distribution="hypercorn",
    tested=">=0.18,<0.19",
    capability=(
        "a WebSocket's close code reaching the app (the peer's, not 1006) and a bad frame failing"
        " the connection with its close frame (1007 for invalid UTF-8, 1002 for a protocol error)"
    ),
    fallback=(
        "hypercorn's own WebSocket stream runs: a peer's close reaches the app as 1006, and a bad"
        " frame ends the connection without a close frame"
    ),
    upstream=(
        "https://github.com/pgjones/hypercorn/issues/127 (a peer's close reaches the app as 1006);"
        " none filed for the missing 1007/1002 close frame. Smallest change: in"
        " WSStream._handle_events, pass a peer's CloseConnection code on to websocket.disconnect,"
        " and answer a CloseConnection wsproto yields in state OPEN with a close frame of its code"
    ),
    module=MODULE,
)

H3_LATE_BODY = CarriedPatch(
    distribution="hypercorn",
    tested=">=0.18,<0.19",
    capability="HTTP/3 going on after a response sent before its request's body was all received",
    fallback=(
        "APP_HTTP_VERSIONS with h3 is refused (deploy/hypercorn.py): the rest of such a body would stop"
        " HTTP/3 for the whole process"
    ),
    upstream=(
        "https://github.com/pgjones/hypercorn/pull/334 mends the same KeyError in HTTP/2; none for HTTP/3."
        " Smallest change: in H3Protocol.handle, skip DataReceived for a stream no longer in self.streams"
    ),
    module=MODULE,
)

ACCEPT_SETTLE = CarriedPatch(
    distribution="hypercorn",
    tested=">=0.18,<0.19",
    capability=(
        "a connection a stopping supervised hypercorn worker accepted an instant before (its TLS "
        "handshake or first request still on its way) is served, not cut, when workers are replaced"
    ),
    fallback=(
        "hypercorn's stop closes at once every connection with no request in progress, and drops "
        "those still in their TLS handshake: the client sees the connection closed without a response"
    ),
    upstream=(
        "none filed; deleted once worker_serve (hypercorn/asyncio/run.py), at a shutdown, closes its "
        "listeners and lets what they accepted finish its TLS handshake and send its first request "
        "before it sets `terminated` and waits for its connections"
    ),
    module=MODULE,
)

H3_PROMPT_STOP = CarriedPatch(
    distribution="hypercorn",
    tested=">=0.18,<0.19",
    capability=(
        "a stop of an HTTP/3 server ending once its QUIC connections have, not after APP_GRACEFUL_TIMEOUT"
    ),
    fallback=(
        "with h3 on, a stop waits the whole APP_GRACEFUL_TIMEOUT unless a datagram arrives after the last"
        " QUIC connection closed"
    ),
    upstream=(
        "none filed. Smallest change: UDPServer.run (hypercorn/asyncio/udp_server.py) also wakes when"
        " `context.terminated` is set, not only when a datagram arrives"
    ),
    module=MODULE,
)

CARRIED = (WEBSOCKET_CLOSE_CODES, H3_LATE_BODY, ACCEPT_SETTLE, H3_PROMPT_STOP)
# How often a stopping HTTP/3 server's QUIC listeners are woken to look at their stop flag.
QUIC_WAKE_SECONDS = 0.1


class ListenerRecordingLoop(uvloop.Loop):
    """uvloop's loop, keeping the listeners made on it: hypercorn's `serve()` does not expose its own."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[asyncio.AbstractServer] = []

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:  # type: ignore[override]
        server = await super().create_server(*args, **kwargs)
        self.listeners.append(server)
        return server


def worker_loop() -> asyncio.AbstractEventLoop:
    """The loop a supervised worker serves on: one that lets `settle_accepted()` reach its listeners
    inside the tested range, uvloop's own outside it."""
    return ListenerRecordingLoop() if ACCEPT_SETTLE.applies() else uvloop.new_event_loop()


async def settle_accepted() -> None:
    """At a worker's stop, before hypercorn's own: stop accepting, then give the connections just
    accepted the time to finish their TLS handshake and send their first request, which hypercorn's
    stop then answers instead of cutting. Does nothing on another loop than `worker_loop()`'s."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, ListenerRecordingLoop):
        return
    for listener in loop.listeners:
        listener.close()  # this process's copy only: the replacement accepts on the same socket
    await asyncio.sleep(ACCEPTED_SETTLE_SECONDS)


async def wake_quic_listeners(binds: list[str]) -> None:
    """While a stop is under way: an empty datagram to each QUIC listener (`binds`: hypercorn's
    quic_bind, a wildcard host reached on loopback) every QUIC_WAKE_SECONDS. hypercorn's QUIC
    loop looks at its stop flag only when a datagram arrives; it drops an empty one (no QUIC
    header). Runs until the server's loop ends and cancels it."""
    if not H3_PROMPT_STOP.applies() or not binds:
        return
    addresses = [_loopback_if_wildcard(*_host_port(bind)) for bind in binds]
    targets = [(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port)) for host, port in addresses]
    with contextlib.ExitStack() as stack:
        senders = {
            family: stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
            for family in {family for family, _ in targets}
        }
        for sender in senders.values():
            sender.setblocking(False)
        while True:
            for family, address in targets:
                with contextlib.suppress(OSError):  # a full buffer or a listener already closed
                    senders[family].sendto(b"", address)
            await asyncio.sleep(QUIC_WAKE_SECONDS)


def _host_port(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


def _loopback_if_wildcard(host: str, port: int) -> tuple[str, int]:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port  # noqa: S104


def install(*, h3: bool = False) -> bool:
    """Have hypercorn's HTTP/1.1 protocol build the mended WebSocket stream, and, in a process that
    serves h3, its QUIC protocol the mended HTTP/3 one, each inside its tested range only.

    Called in every process that serves (a spawned worker inherits no patch); returns whether the
    WebSocket one applied. Only for h3: the QUIC protocol imports aioquic and its codecs, about
    13 MB of RSS in a process that would never use them (the `http3` extra may well be installed).
    """
    if h3 and H3_LATE_BODY.applies():
        from hypercorn.protocol import quic  # noqa: PLC0415 - imports aioquic: only to serve h3

        setattr(quic, "H3Protocol", late_body_h3_protocol())  # noqa: B010 - looked up per QUIC connection
    if not WEBSOCKET_CLOSE_CODES.applies():
        return False
    from hypercorn.protocol import h11  # noqa: PLC0415 - private: imported once the patch applies

    setattr(h11, "WSStream", close_code_stream())  # noqa: B010 - the name h11.py looks up per connection
    return True


@functools.cache
def late_body_h3_protocol() -> type[Any]:
    """hypercorn's HTTP/3 protocol, dropping body data of a stream it has already answered and closed."""
    from aioquic.h3.events import DataReceived, HeadersReceived  # noqa: PLC0415
    from hypercorn.protocol.events import Body, EndBody  # noqa: PLC0415
    from hypercorn.protocol.h3 import H3Protocol  # noqa: PLC0415

    class LateBodyH3Protocol(H3Protocol):
        async def handle(self, quic_event: Any) -> None:
            # hypercorn's loop (hypercorn/protocol/h3.py), each stream looked up with get(): the
            # events come from one call that this loop must drain, so it cannot wrap hypercorn's.
            for event in self.connection.handle_event(quic_event):
                if isinstance(event, HeadersReceived):
                    if self.context.terminated.is_set():
                        continue  # stopping: no new request (its body, if any, is dropped below)
                    await self._create_stream(event)
                    stream = self.streams.get(event.stream_id)
                    if event.stream_ended and stream is not None:
                        await stream.handle(EndBody(stream_id=event.stream_id))
                elif isinstance(event, DataReceived):
                    stream = self.streams.get(event.stream_id)
                    if stream is None:
                        continue  # answered and closed already: the rest of its body goes unread
                    await stream.handle(Body(stream_id=event.stream_id, data=event.data))
                    if event.stream_ended:
                        await stream.handle(EndBody(stream_id=event.stream_id))

    return LateBodyH3Protocol


@functools.cache
def close_code_stream() -> type[Any]:
    """hypercorn's WebSocket stream, telling the app the close code its connection ended with: its
    peer's, or the one it was failed with on a frame wsproto could not take.

    Built on first use: hypercorn's private modules are imported only where the patch applies,
    so a release that moved them still starts.
    """
    from hypercorn.protocol.events import StreamClosed  # noqa: PLC0415
    from hypercorn.protocol.ws_stream import (  # noqa: PLC0415
        ASGIWebsocketState,
        FrameTooLargeError,
        WSStream,
    )
    from wsproto.connection import ConnectionState  # noqa: PLC0415
    from wsproto.events import CloseConnection, Message, Ping  # noqa: PLC0415
    from wsproto.frame_protocol import CloseReason  # noqa: PLC0415

    class CloseCodeWSStream(WSStream):
        ending_close_code: int | None = None

        async def _send_wsproto_event(self, event: Any) -> None:
            # hypercorn answers a peer's close frame with its response(), which carries the peer's code.
            if isinstance(event, CloseConnection) and self.connection.state == ConnectionState.REMOTE_CLOSING:
                self.ending_close_code = event.code
            await super()._send_wsproto_event(event)

        async def _handle_events(self) -> None:
            # hypercorn's loop (hypercorn/protocol/ws_stream.py), plus the first branch: the events
            # come from one generator that this loop must drain, so it cannot wrap hypercorn's.
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

    return CloseCodeWSStream
