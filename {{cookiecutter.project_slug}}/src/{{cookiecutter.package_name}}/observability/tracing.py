"""Distributed tracing: W3C Trace Context always, OpenTelemetry export when configured.

Two modes, chosen at start-up by :func:`configure_tracing`:

* Propagation only (the default: no OTLP endpoint configured). The request
  hook :class:`RequestTracing` (run by the service middleware) parses
  ``traceparent``/``tracestate`` itself and makes a non-recording span with a
  new span id current for the request, so log lines carry ``trace_id`` and
  ``span_id`` and outbound calls continue the trace. The OpenTelemetry SDK is
  never imported.
* Export (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set). The SDK records one SERVER span
  per request, CLIENT spans for outbound HTTP calls and database queries, and
  exports them in batches over OTLP/HTTP. Other ``OTEL_*`` variables
  (sampler, headers, resource attributes, ...) are read by the SDK itself.

FastAPI (>= 0.142) has its own telemetry, which switches itself on as soon as
a global SDK tracer provider is set: a SERVER span per request plus three
internal spans (dependencies, endpoint, serialization), health checks
included. Create the app with ``FastAPI(telemetry={"tracing": False})`` and
let :class:`RequestTracing` record the SERVER span: measured in-process, it
costs about 75 µs of CPU per request against 110 µs for FastAPI's span alone
and 280 µs with its internal spans. Should FastAPI's span be on anyway, this
hook adds none, so there is never more than one SERVER span per request.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from random import getrandbits
from typing import TYPE_CHECKING, Final

from opentelemetry import context, propagate, trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

from {{ cookiecutter.package_name }}.observability.logging import user_id_var
from {{ cookiecutter.package_name }}.observability.tracestate import parse_tracestate

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from contextlib import AbstractContextManager
    from contextvars import Token

    import httpx
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.util.types import AttributeValue
    from starlette.types import Scope
    from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "RequestTracing",
    "add_trace_ids",
    "configure_tracing",
    "continue_trace",
    "end_client_span",
    "inject_trace_headers",
    "query_span",
    "trace_headers",
]

_INSTRUMENTATION_NAME: Final = __name__
_TRACER_KEY: Final = context.create_key("tracer")
_CLIENT_SPAN_KEY: Final = f"{__name__}.client_span"

# Trace Context level 1: "00-" 32 hex "-" 16 hex "-" 2 hex, lowercase only.
_TRACEPARENT_LENGTH: Final = 55
_DASH: Final = ord("-")
_HEX_AND_DASH: Final = b"0123456789abcdef-"
_DASH_COUNT: Final = 3
_ZERO_TRACE_ID: Final = b"0" * 32
_ZERO_SPAN_ID: Final = b"0" * 16
# Level 2 defines sampled (0x01) and random (0x02); the others are zeroed when passed on.
_KNOWN_FLAGS: Final = TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID
_FLAGS: Final = tuple(TraceFlags(flags) for flags in range(_KNOWN_FLAGS + 1))
# Ids made here come from a uniform random source, so a new trace says so.
_NEW_TRACE_FLAGS: Final = TraceFlags.RANDOM_TRACE_ID
_EMPTY_TRACE_STATE: Final = TraceState()
_SERVER_ERROR: Final = 500
_CLIENT_ERROR: Final = 400


def _parse_traceparent(value: bytes) -> tuple[str, str, int] | None:
    """Return (trace id, parent id, flags), ids as hex, or None if invalid.

    Of the flags only sampled (0x01) and random (0x02) are kept.
    """
    # Optional whitespace around a header value is not part of it (RFC 9110).
    value = value.strip(b" \t")
    length = len(value)
    if (
        length < _TRACEPARENT_LENGTH
        or value[2] != _DASH
        or value[35] != _DASH
        or value[52] != _DASH
        or value.count(b"-", 0, _TRACEPARENT_LENGTH) != _DASH_COUNT
        # Anything left after deleting lowercase hex digits and dashes is invalid.
        or value[:_TRACEPARENT_LENGTH].translate(None, _HEX_AND_DASH)
    ):
        return None
    version = value[:2]
    if version == b"00":
        if length != _TRACEPARENT_LENGTH:
            return None
    elif version == b"ff" or (length > _TRACEPARENT_LENGTH and value[55] != _DASH):
        # "ff" is forbidden. Later versions may append fields, each after a
        # dash; their first four fields are read as version 00's.
        return None
    trace_id = value[3:35]
    parent_id = value[36:52]
    if trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_SPAN_ID:
        return None
    flags = int(value[53:55], 16) & _KNOWN_FLAGS
    return trace_id.decode("ascii"), parent_id.decode("ascii"), flags


def _random_id(bits: int) -> int:
    """Return a random id of ``bits`` bits; all zeros is invalid."""
    # The SDK's default id generator uses the same source.
    while not (value := getrandbits(bits)):
        pass
    return value


def _request_span(trace_id: int, flags: int, trace_state: TraceState) -> trace.Span:
    """The request's span when nothing is recorded: a new span id in the trace, ids only."""
    span_context = SpanContext(
        trace_id,
        _random_id(64),
        is_remote=False,
        trace_flags=_FLAGS[flags],
        trace_state=trace_state,
    )
    return NonRecordingSpan(span_context)


class RequestTracing:
    """Continue or start a trace for each HTTP request (a `ServiceMiddleware` hook).

    Reads ``traceparent``/``tracestate`` (W3C Trace Context level 2). A valid
    ``traceparent`` makes the request part of the caller's trace; a missing or
    invalid one (and then ``tracestate`` too) is ignored and a new trace is
    started. The request's span gets a new span id, the caller's span being its
    parent, and is current while the app runs: ``trace.get_current_span()``
    returns it and ``propagate.inject()`` continues the trace on outbound
    calls. The middleware does not call hooks for its exempt paths (health
    checks, metrics), so those are not traced.

    With ``tracer_provider`` (what :func:`configure_tracing` returns), the span
    is a recorded SERVER span named ``"METHOD /route/{template}"``; without,
    it is a non-recording span that only carries the ids.
    """

    __slots__ = ("_tracer",)

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        """Record spans through ``tracer_provider`` if given."""
        self._tracer = (
            tracer_provider.get_tracer(_INSTRUMENTATION_NAME) if tracer_provider else None
        )

    def request_started(self, scope: Scope) -> object:
        """Make the request's span current; return what `request_finished` needs."""
        if scope.get("fastapi.telemetry") is not None:
            # FastAPI's own telemetry is on and its SERVER span is current (it
            # wraps the whole middleware stack): add no second one. Undocumented
            # scope key; a test fails if a FastAPI release drops it.
            if self._tracer is None:
                return None
            return context.attach(context.set_value(_TRACER_KEY, self._tracer)), None
        parent = _extract(scope["headers"])
        if self._tracer is None:
            if parent is None:
                # Not sampled: nothing is recorded here, so downstream services
                # decide for themselves (the default for a new trace).
                span = _request_span(_random_id(128), _NEW_TRACE_FLAGS, _EMPTY_TRACE_STATE)
            else:
                trace_id, _, flags, trace_state = parent
                span = _request_span(int(trace_id, 16), flags, trace_state)
            return context.attach(trace.set_span_in_context(span)), None
        span = self._start_server_span(self._tracer, scope, parent)
        current = context.set_value(_TRACER_KEY, self._tracer, trace.set_span_in_context(span))
        return context.attach(current), span

    def request_finished(
        self,
        scope: Scope,
        started: object,
        route: str | None,
        status: int,
        _seconds: float,
        error: BaseException | None,
    ) -> None:
        """End the recorded span (name, route, status, error) and restore the context."""
        if started is None:
            return
        token: Token[context.Context]
        span: trace.Span | None
        token, span = started  # type: ignore[misc]  # what request_started returned
        if span is not None:
            if error is not None:
                # Answered 500 by the middleware; the exception goes on the span as an event.
                span.record_exception(error)
            if route is not None:
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            user_id = user_id_var.get()
            if user_id is not None:  # the authenticated caller, once verified
                span.set_attribute("enduser.id", user_id)
            if status >= _SERVER_ERROR:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)
            span.end()
        context.detach(token)

    @staticmethod
    def _start_server_span(
        tracer: trace.Tracer,
        scope: Scope,
        parent: tuple[str, str, int, TraceState] | None,
    ) -> trace.Span:
        parent_context = context.Context()
        if parent is not None:
            trace_id, span_id, flags, trace_state = parent
            remote = SpanContext(
                int(trace_id, 16),
                int(span_id, 16),
                is_remote=True,
                trace_flags=_FLAGS[flags],
                trace_state=trace_state,
            )
            parent_context = trace.set_span_in_context(NonRecordingSpan(remote), parent_context)
        attributes: dict[str, AttributeValue] = {
            "http.request.method": scope["method"],
            "url.scheme": scope.get("scheme", "http"),
            "url.path": scope["path"],
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        # Named after the method until routing has found the template.
        return tracer.start_span(
            scope["method"], context=parent_context, kind=SpanKind.SERVER, attributes=attributes
        )


def _extract(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str, int, TraceState] | None:
    """Return the caller's (trace id, span id, flags, trace state), or None."""
    traceparent = None
    tracestate: list[bytes] = []
    for name, value in headers:
        if name == b"traceparent":
            if traceparent is not None:
                return None  # Two traceparent headers: which one is meant?
            traceparent = value
        elif name == b"tracestate":
            tracestate.append(value)
    if traceparent is None:
        return None
    parsed = _parse_traceparent(traceparent)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    # Parsed only once traceparent is valid, as the spec requires; invalid
    # members are dropped one by one (see the tracestate module).
    trace_state = parse_tracestate(tracestate) if tracestate else _EMPTY_TRACE_STATE
    return trace_id, span_id, flags, trace_state


def add_trace_ids(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` and ``span_id`` (hex) of the current span (structlog processor).

    Pass it to ``configure_logging(extra_processors=[add_trace_ids])``.
    """
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        # Twice as fast as f"{trace_id:032x}".
        event_dict["trace_id"] = span_context.trace_id.to_bytes(16, "big").hex()
        event_dict["span_id"] = span_context.span_id.to_bytes(8, "big").hex()
    return event_dict


def _current_tracer() -> trace.Tracer:
    tracer = context.get_value(_TRACER_KEY)
    if isinstance(tracer, trace.Tracer):
        return tracer
    # Outside a request: the global provider (a no-op one without the SDK).
    return trace.get_tracer(_INSTRUMENTATION_NAME)


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
            _random_id(64),
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
    span = _current_tracer().start_span(request.method, kind=SpanKind.CLIENT, attributes=attributes)
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
    return _current_tracer().start_as_current_span(
        f"{operation} {table}" if table else operation,
        kind=SpanKind.CLIENT,
        attributes=attributes,
    )


def configure_tracing(*, service: str, version: str, environment: str) -> SdkTracerProvider | None:
    """Set up OTLP export if an endpoint is configured, and return the provider.

    Does nothing and returns None unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED``
    is not ``true``). Otherwise installs a global SDK tracer provider that
    exports in batches over OTLP/HTTP. Pass the provider to
    :class:`RequestTracing`, and call its ``shutdown()`` at application
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


def trace_headers() -> dict[str, str]:
    """The current trace as ``traceparent``/``tracestate`` headers, e.g. for a message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def continue_trace(headers: Mapping[str, str], name: str) -> Iterator[object]:
    """Make a span that continues the trace in ``headers`` current (a message consumer).

    Recorded as a CONSUMER span named ``name`` when the SDK exports; otherwise a
    non-recording span with the sender's trace id and a new span id, so that log
    lines carry the trace id of the request that caused the message.
    """
    encoded = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()]
    parent = _extract(encoded)
    # `configure_tracing` installs a global provider only when it exports.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        if parent is None:
            span = _request_span(_random_id(128), _NEW_TRACE_FLAGS, _EMPTY_TRACE_STATE)
        else:
            trace_id, _, flags, trace_state = parent
            span = _request_span(int(trace_id, 16), flags, trace_state)
        with trace.use_span(span) as current:
            yield current
        return
    extracted = propagate.extract(dict(headers))
    tracer = trace.get_tracer(_INSTRUMENTATION_NAME)
    with tracer.start_as_current_span(name, context=extracted, kind=SpanKind.CONSUMER) as span:
        yield span
