"""OTLP export of spans, set up only when an endpoint is configured."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

__all__ = ["configure_tracing"]


def configure_tracing(*, service: str, version: str, environment: str) -> SdkTracerProvider | None:
    """Set up OTLP export if an endpoint is configured, and return the provider.

    Does nothing and returns None unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED``
    is not ``true``). Otherwise installs a global SDK tracer provider that
    exports in batches over OTLP/HTTP. Pass the provider to
    ``tracing.RequestTracing``, and call its ``shutdown()`` at application
    shutdown to flush the last spans.

    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` override the
    resource attributes given here.
    """
    environ = os.environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        return None

    # Imported only when exporting: loading the SDK and the exporter takes
    # noticeable start-up time that propagation-only processes need not pay.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create(
        {
            "service.name": service,
            "service.version": version,
            "deployment.environment.name": environment,
            # The pre-1.27 semantic-conventions name, which many backends still use.
            "deployment.environment": environment,
        }
    ).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
