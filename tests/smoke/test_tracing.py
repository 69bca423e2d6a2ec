"""Tracing: off and not imported by default; with APP_OTLP_ENDPOINT, spans reach an OTLP receiver."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from deploy.profiles import PROFILES
from tests.support.process import LOOPBACK, REPO_ROOT, clean_environ, running_server

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]


class _Receiver(BaseHTTPRequestHandler):
    exports: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.exports.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    _Receiver.exports = []
    server = ThreadingHTTPServer((LOOPBACK, 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_port}/v1/traces", _Receiver.exports
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_spans_are_exported_when_an_endpoint_is_set(
    profile: str, receiver: tuple[str, list[ExportTraceServiceRequest]]
) -> None:
    endpoint, exports = receiver
    env = {"APP_OTLP_ENDPOINT": endpoint, "APP_OTEL_SERVICE_NAME": "traced-service", "APP_WORKERS": "1"}
    with running_server(profile, env) as server:
        assert httpx.get(f"{server.base_url}/").status_code == 200
        server.signal(signal.SIGTERM)  # the lifespan shutdown flushes the batch
        server.wait_exit(timeout=30)
    spans = [
        (resource.resource, span)
        for export in exports
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for _, span in spans}
    assert any(name.startswith("GET /") for name in names), names
    service_names = {
        attr.value.string_value
        for resource, _ in spans
        for attr in resource.attributes
        if attr.key == "service.name"
    }
    assert service_names == {"traced-service"}


def test_sdk_not_imported_when_tracing_is_off() -> None:
    probe = (
        "import sys; from service.app import create_app; from service.settings import Settings; "
        "create_app(Settings()); print('opentelemetry.sdk' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=clean_environ({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "False"
