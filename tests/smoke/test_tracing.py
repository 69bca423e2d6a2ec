"""Tracing: off and not imported by default; with APP_OTLP_ENDPOINT, spans reach an OTLP receiver,
with the APP_OTLP_HEADERS on every export."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from deploy.profiles import PROFILES
from devkit.process import REPO_ROOT, clean_environ, running_server
from tests.support.otlp import Receiver, otlp_receiver

pytestmark = [pytest.mark.smoke, pytest.mark.usefixtures("local_only")]


# What a managed collector asks for; given here as a variable, as a `secretKeyRef` would.
HEADERS = "authorization=Bearer smoke-token-4f1c,x-tenant=team%2Capi"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as receiver:
        yield receiver


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_spans_are_exported_when_an_endpoint_is_set(profile: str, receiver: Receiver) -> None:
    env = {
        "APP_OTLP_ENDPOINT": receiver.endpoint,
        "APP_OTLP_HEADERS": HEADERS,
        "APP_OTEL_SERVICE_NAME": "traced-service",
        "APP_WORKERS": "1",
    }
    with running_server(profile, env) as server:
        assert httpx.get(f"{server.base_url}/").status_code == 200
        server.signal(signal.SIGTERM)  # the lifespan shutdown flushes the batch
        server.wait_exit(timeout=30)
        log = server.log()
    spans = receiver.spans()
    names = {span.name for _, span in spans}
    assert any(name.startswith("GET /") for name in names), names
    service_names = {
        attr.value.string_value
        for resource, _ in spans
        for attr in resource.attributes
        if attr.key == "service.name"
    }
    assert service_names == {"traced-service"}
    for export in receiver.exports:
        assert export.headers["authorization"] == "Bearer smoke-token-4f1c"
        assert export.headers["x-tenant"] == "team,api"
    assert "smoke-token-4f1c" not in log


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
