"""A real HTTP/3 client for tests: aioquic's asyncio QUIC client with its H3Connection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

LOOPBACK = "127.0.0.1"


@dataclass
class H3Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class _H3Client(QuicConnectionProtocol):
    """Collects each request stream's response until its end."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.h3 = H3Connection(self._quic)
        self.responses: dict[int, H3Response] = {}
        self.done: dict[int, asyncio.Event] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived) or event.stream_id not in self.responses:
            return
        response = self.responses[event.stream_id]
        if isinstance(event, HeadersReceived):
            for name, value in event.headers:
                if name == b":status":
                    response.status = int(value)
                else:
                    response.headers[name.decode()] = value.decode()
        else:
            response.body += event.data
        if event.stream_ended:
            self.done[event.stream_id].set()

    async def request(
        self, method: str, authority: str, path: str, *, headers: dict[str, str], body: bytes, late: bool
    ) -> H3Response:
        stream_id = self._quic.get_next_available_stream_id()
        self.responses[stream_id] = H3Response()
        self.done[stream_id] = asyncio.Event()
        request = [(b":method", method.encode()), (b":scheme", b"https")]
        request += [(b":authority", authority.encode()), (b":path", path.encode())]
        request += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self.h3.send_headers(stream_id, request, end_stream=not body)
        if body and not late:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()
        await self.done[stream_id].wait()
        if body and late:  # the body only once the answer is in, as a slow client's would be
            self.h3.send_data(stream_id, body, end_stream=True)
            self.transmit()
            await self.ping()  # acknowledged: the server has had the body
        return self.responses[stream_id]


async def _request(
    method: str, port: int, path: str, cafile: str, *, headers: dict[str, str], body: bytes, late: bool
) -> H3Response:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    configuration.load_verify_locations(cafile)
    async with connect(LOOPBACK, port, configuration=configuration, create_protocol=_H3Client) as client:
        assert isinstance(client, _H3Client)
        return await client.request(method, f"{LOOPBACK}:{port}", path, headers=headers, body=body, late=late)


def h3_request(
    method: str,
    port: int,
    path: str,
    cafile: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    body_after_answer: bool = False,
    timeout: float = 5.0,
) -> H3Response:
    """One request over HTTP/3 (a new QUIC connection) to 127.0.0.1:`port` in UDP, trusting the
    CA in `cafile`; with `body_after_answer`, its body is sent once the response has ended."""
    return asyncio.run(
        asyncio.wait_for(
            _request(method, port, path, cafile, headers=headers or {}, body=body, late=body_after_answer),
            timeout,
        )
    )
