"""An OTLP/HTTP traces receiver on 127.0.0.1 that keeps what it is sent, headers included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from devkit.process import LOOPBACK


@dataclass
class Export:
    headers: dict[str, str]
    request: ExportTraceServiceRequest


@dataclass
class Receiver:
    endpoint: str
    exports: list[Export] = field(default_factory=list)

    def spans(self) -> list[tuple[Resource, Span]]:
        """(resource, span) of every span received."""
        return [
            (resource.resource, span)
            for export in self.exports
            for resource in export.request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver(endpoint="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.exports.append(Export({k.lower(): v for k, v in self.headers.items()}, request))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    receiver.endpoint = f"http://{LOOPBACK}:{server.server_port}/v1/traces"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
