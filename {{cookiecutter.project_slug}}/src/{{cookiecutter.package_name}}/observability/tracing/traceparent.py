"""The W3C ``traceparent`` header (Trace Context level 2), parsed as the spec says.

Read by `tracing.RequestTracing` for every request and by `tracing.continue_trace`
for every message; ``tracestate`` has its own module.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.trace import TraceFlags

__all__ = ["KNOWN_FLAGS", "parse_traceparent"]

# Trace Context level 1: "00-" 32 hex "-" 16 hex "-" 2 hex, lowercase only.
_TRACEPARENT_LENGTH: Final = 55
_DASH: Final = ord("-")
_HEX_AND_DASH: Final = b"0123456789abcdef-"
_DASH_COUNT: Final = 3
_ZERO_TRACE_ID: Final = b"0" * 32
_ZERO_SPAN_ID: Final = b"0" * 16
# Level 2 defines sampled (0x01) and random (0x02); the others are zeroed when passed on.
KNOWN_FLAGS: Final = TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID


def parse_traceparent(value: bytes) -> tuple[str, str, int] | None:
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
    flags = int(value[53:55], 16) & KNOWN_FLAGS
    return trace_id.decode("ascii"), parent_id.decode("ascii"), flags
