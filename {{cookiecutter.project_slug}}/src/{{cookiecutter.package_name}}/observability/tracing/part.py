"""The tracing part: W3C propagation in and out, spans exported when OTLP is configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.observability.tracing.client_spans import (
    end_client_span,
    inject_trace_headers,
    query_span,
)
from {{ cookiecutter.package_name }}.observability.tracing.export import configure_tracing
from {{ cookiecutter.package_name }}.observability.tracing.spans import (
    RequestTracing,
    add_trace_ids,
    continue_trace,
    trace_headers,
)

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from {{ cookiecutter.package_name }}.service.parts import Parts


def add_tracing(parts: Parts, *, service: str, version: str, environment: str) -> None:
    """Trace ids in every log line, a span per request, trace headers on calls and messages."""
    provider = configure_tracing(service=service, version=version, environment=environment)
    parts.log_processors.append(add_trace_ids)
    # First among the hooks: the access line is written while the request's span is current.
    parts.hooks.append(RequestTracing(provider))
    parts.outbound_hooks["request"].append(inject_trace_headers)
    parts.outbound_hooks["response"].append(end_client_span)
    parts.trace_headers = trace_headers
    parts.continue_trace = continue_trace
    if provider is None:
        return
    parts.client_span = query_span  # a span per database and Redis command

    async def flush_on_exit(stack: AsyncExitStack) -> None:
        stack.callback(provider.shutdown)  # flushes the last spans, after everything else

    parts.resources.append(flush_on_exit)
    parts.worker_resources.append(flush_on_exit)
