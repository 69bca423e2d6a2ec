"""Optional OpenTelemetry tracing through FastAPI's native telemetry.

Off unless `APP_OTLP_ENDPOINT` is set, and then only is the SDK imported: an
unconfigured service pays nothing. Spans are batched and exported over
OTLP/HTTP; the lifespan shutdown flushes them.
"""

from __future__ import annotations

import importlib.util

from fastapi.telemetry import TelemetryConfig

from service.settings import Settings, SettingsError, env_name
from service.settings_types import otlp_header_map

REQUIRED = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


def check_available(settings: Settings) -> None:
    """Refuse a tracing endpoint when the `tracing` extra is missing, before any server starts."""
    if settings.otlp_endpoint is None:
        return
    try:
        missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    except ModuleNotFoundError:
        missing = list(REQUIRED)
    if missing:
        raise SettingsError(
            f"{env_name('otlp_endpoint')} is set but {', '.join(missing)} is not installed "
            "(install the project with its `tracing` extra)"
        )


class Tracing:
    """The provider FastAPI traces with, and how to flush it."""

    def __init__(self, settings: Settings) -> None:
        check_available(settings)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        self.provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
        headers = otlp_header_map(settings.otlp_headers) if settings.otlp_headers is not None else None
        exporter = OTLPSpanExporter(endpoint=str(settings.otlp_endpoint), headers=headers, timeout=5)
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))

    def telemetry_config(self) -> TelemetryConfig:
        # Traces only: metrics are Prometheus' job here, logs go to stdout.
        return {"tracer_provider": self.provider, "tracing": True, "metrics": False, "logs": False}

    def shutdown(self) -> None:
        self.provider.shutdown()


def tracing_for(settings: Settings) -> Tracing | None:
    return Tracing(settings) if settings.otlp_endpoint is not None else None
