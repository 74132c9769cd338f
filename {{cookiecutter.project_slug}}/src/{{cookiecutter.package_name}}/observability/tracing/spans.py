"""Tracing of requests and messages: W3C Trace Context always, OTLP export when configured.

Two modes, chosen at start-up by ``export.configure_tracing``:

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

This module traces what comes in (requests, messages) and carries a trace into a
message (`trace_headers`); `client_spans` traces the calls the service makes,
`traceparent` and `tracestate` parse the headers, `export` sets up OTLP.
"""

from __future__ import annotations

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

from {{ cookiecutter.package_name }}.observability.logs.context import TRACE_IDS_KEY, user_id_var
from {{ cookiecutter.package_name }}.observability.tracing.traceparent import KNOWN_FLAGS, parse_traceparent
from {{ cookiecutter.package_name }}.observability.tracing.tracestate import parse_tracestate

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from contextvars import Token

    from opentelemetry.util.types import AttributeValue
    from starlette.types import Scope
    from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "RequestTracing",
    "add_trace_ids",
    "continue_trace",
    "current_tracer",
    "new_span_id",
    "trace_headers",
]

_INSTRUMENTATION_NAME: Final = __name__
_TRACER_KEY: Final = context.create_key("tracer")
_FLAGS: Final = tuple(TraceFlags(flags) for flags in range(KNOWN_FLAGS + 1))
# Ids made here come from a uniform random source, so a new trace says so.
_NEW_TRACE_FLAGS: Final = TraceFlags.RANDOM_TRACE_ID
_EMPTY_TRACE_STATE: Final = TraceState()
_SERVER_ERROR: Final = 500
_TRACEPARENT: Final = b"traceparent"
# The context key OpenTelemetry keeps the current span under, read from a context
# holding only a span (the key itself is private to the API).
_SPAN_KEY: Final = next(iter(trace.set_span_in_context(trace.INVALID_SPAN)))


def _random_id(bits: int) -> int:
    """Return a random id of ``bits`` bits; all zeros is invalid."""
    # The SDK's default id generator uses the same source.
    while not (value := getrandbits(bits)):
        pass
    return value


def _request_span(trace_id: int, span_id: int, flags: int, trace_state: TraceState) -> trace.Span:
    """The request's span when nothing is recorded: ids only."""
    # Positional (trace id, span id, is_remote, flags, state): keywords would cost a
    # dict per request on the way to SpanContext.__new__.
    span_context = SpanContext(trace_id, span_id, False, _FLAGS[flags], trace_state)  # noqa: FBT003
    return NonRecordingSpan(span_context)


def _hex_ids(trace_id: int, span_id: int) -> tuple[str, str]:
    """The trace id and span id as log lines carry them."""
    # Twice as fast as f"{trace_id:032x}".
    return trace_id.to_bytes(16, "big").hex(), span_id.to_bytes(8, "big").hex()


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
    it is a non-recording span that only carries the ids. Either way, its ids in
    hex are left in the scope under `TRACE_IDS_KEY` for the access line.
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
        headers = scope["headers"]
        # Most requests (all at the edge) carry no trace context: ruled out at C speed.
        parent = _extract(headers) if _TRACEPARENT in dict(headers) else None
        if self._tracer is None:
            if parent is None:
                # Not sampled: nothing is recorded here, so downstream services
                # decide for themselves (the default for a new trace).
                trace_id = _random_id(128)
                flags, trace_state = _NEW_TRACE_FLAGS, _EMPTY_TRACE_STATE
            else:
                trace_hex, _, flags, trace_state = parent
                trace_id = int(trace_hex, 16)
            span_id = _random_id(64)
            span = _request_span(trace_id, span_id, flags, trace_state)
            # From the ints at hand: the span's properties would cost a call each.
            scope[TRACE_IDS_KEY] = _hex_ids(trace_id, span_id)
            # The request's context holds its span only (what set_span_in_context
            # would add to the server's own, empty one), made without reading the
            # current context: ~3,000 instructions less per request.
            return context.attach(context.Context({_SPAN_KEY: span})), None
        span = self._start_server_span(self._tracer, scope, parent)
        span_context = span.get_span_context()
        if span_context.is_valid:
            scope[TRACE_IDS_KEY] = _hex_ids(span_context.trace_id, span_context.span_id)
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


def _extract(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, str, int, TraceState] | None:
    """Return the caller's (trace id, span id, flags, trace state), or None."""
    traceparent = None
    tracestate: list[bytes] = []
    for name, value in headers:
        if name == _TRACEPARENT:
            if traceparent is not None:
                return None  # Two traceparent headers: which one is meant?
            traceparent = value
        elif name == b"tracestate":
            tracestate.append(value)
    if traceparent is None:
        return None
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    # Parsed only once traceparent is valid, as the spec requires; an invalid
    # list is discarded whole (see the tracestate module).
    trace_state = parse_tracestate(tracestate) if tracestate else _EMPTY_TRACE_STATE
    return trace_id, span_id, flags, trace_state


def add_trace_ids(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` and ``span_id`` (hex) of the current span (structlog processor).

    Pass it to ``configure_logging(extra_processors=[add_trace_ids])``. A line that
    carries a ``span_id`` already keeps its ids: the access line, which has those of
    the request's span from `RequestTracing`.
    """
    if "span_id" in event_dict:
        return event_dict
    # trace.get_current_span() but for its isinstance() check against an ABC, which
    # costs a third of this processor; what is stored under the key is a span.
    span: trace.Span | None = context.get_current().get(_SPAN_KEY)  # type: ignore[assignment]
    if span is None:
        return event_dict
    span_context = span.get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"], event_dict["span_id"] = _hex_ids(
            span_context.trace_id, span_context.span_id
        )
    return event_dict


def current_tracer() -> trace.Tracer:
    """The tracer of the request being handled; outside one, the global provider's."""
    tracer = context.get_value(_TRACER_KEY)
    if isinstance(tracer, trace.Tracer):
        return tracer
    # Outside a request: the global provider (a no-op one without the SDK).
    return trace.get_tracer(_INSTRUMENTATION_NAME)


def new_span_id() -> int:
    """A random span id for a call made under the current span (never zero)."""
    return _random_id(64)


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
        span_id = _random_id(64)
        if parent is None:
            span = _request_span(_random_id(128), span_id, _NEW_TRACE_FLAGS, _EMPTY_TRACE_STATE)
        else:
            trace_id, _, flags, trace_state = parent
            span = _request_span(int(trace_id, 16), span_id, flags, trace_state)
        with trace.use_span(span) as current:
            yield current
        return
    extracted = propagate.extract(dict(headers))
    tracer = trace.get_tracer(_INSTRUMENTATION_NAME)
    with tracer.start_as_current_span(name, context=extracted, kind=SpanKind.CONSUMER) as span:
        yield span
