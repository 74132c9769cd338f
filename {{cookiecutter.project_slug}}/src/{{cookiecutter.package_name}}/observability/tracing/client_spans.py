"""Spans for the calls the service makes: outbound HTTP (httpx hooks) and database queries.

Outbound requests carry the trace on (``traceparent``/``tracestate``); when the SDK
records, each call is a CLIENT span under the request's span.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode

from {{ cookiecutter.package_name }}.observability.tracing.spans import current_tracer, new_span_id

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import httpx
    from opentelemetry.util.types import AttributeValue

__all__ = ["end_client_span", "inject_trace_headers", "query_span"]

_CLIENT_SPAN_KEY: Final = f"{__name__}.client_span"
_CLIENT_ERROR: Final = 400


async def inject_trace_headers(request: httpx.Request) -> None:
    """Propagate the current trace on an outbound request (httpx request hook).

    Sets ``traceparent`` (the current trace id and flags) and passes
    ``tracestate`` on. Each call is an operation of its own, so its parent id
    is new: the id of a CLIENT span started for the call when the current
    span is being recorded (SDK configured), otherwise a new span id that is
    sent but not recorded. The request's span (and its id on log lines) stays
    current. :func:`end_client_span` must be the response hook::

        httpx.AsyncClient(
            event_hooks={"request": [inject_trace_headers], "response": [end_client_span]}
        )
    """
    current = trace.get_current_span()
    if not current.is_recording():
        span_context = current.get_span_context()
        if not span_context.is_valid:
            propagate.inject(request.headers)  # outside a trace: other propagators only
            return
        call = SpanContext(
            span_context.trace_id,
            new_span_id(),
            is_remote=False,
            trace_flags=span_context.trace_flags,
            trace_state=span_context.trace_state,
        )
        propagate.inject(request.headers, context=trace.set_span_in_context(NonRecordingSpan(call)))
        return
    url = request.url
    # netloc excludes credentials; the query string is left out as it may hold secrets.
    path = url.raw_path.partition(b"?")[0].decode("ascii")
    attributes: dict[str, AttributeValue] = {
        "http.request.method": request.method,
        "server.address": url.host,
        "url.full": f"{url.scheme}://{url.netloc.decode('ascii')}{path}",
    }
    if url.port is not None:
        attributes["server.port"] = url.port
    span = current_tracer().start_span(request.method, kind=SpanKind.CLIENT, attributes=attributes)
    request.extensions[_CLIENT_SPAN_KEY] = span
    propagate.inject(request.headers, context=trace.set_span_in_context(span))


async def end_client_span(response: httpx.Response) -> None:
    """End the CLIENT span :func:`inject_trace_headers` started (httpx response hook).

    Requests that fail without a response (connection errors, timeouts) leave
    their span unexported; the error surfaces in the server span and the logs.
    """
    span = response.request.extensions.pop(_CLIENT_SPAN_KEY, None)
    if not isinstance(span, trace.Span):
        return
    status = response.status_code
    span.set_attribute("http.response.status_code", status)
    if status >= _CLIENT_ERROR:
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)
    span.end()


def query_span(
    operation: str,
    *,
    table: str | None = None,
    statement: str | None = None,
    system: str = "postgresql",
) -> AbstractContextManager[trace.Span]:
    """Return a context manager that records a CLIENT span for a database query.

    Meant for when the SDK is configured. Named ``"OPERATION table"`` (e.g.
    ``"SELECT items"``); ``statement`` should be the parameterised SQL text,
    never one with values interpolated; ``system`` the store (``redis`` for its commands).
    """
    attributes: dict[str, AttributeValue] = {
        "db.system.name": system,
        "db.operation.name": operation,
    }
    if table is not None:
        attributes["db.collection.name"] = table
    if statement is not None:
        attributes["db.query.text"] = statement
    return current_tracer().start_as_current_span(
        f"{operation} {table}" if table else operation,
        kind=SpanKind.CLIENT,
        attributes=attributes,
    )
