"""The W3C ``tracestate`` header, parsed by the current grammar of the spec.

Hand-written because OpenTelemetry's ``TraceState.from_header`` (and the
``TraceState`` constructor) follow the older vendor grammar: they reject keys
the current text allows (``foo@``, ``foo@@bar``, ``1abc@x1``) and log a WARNING
that echoes the caller's bytes for every such request. Here nothing is logged.
A header that breaks the grammar or its limits anywhere (a malformed member, more
than 32 members) is discarded whole, as the spec and its test suite (at the
default strictness) require; a repeated key keeps its leftmost member:

    list        = list-member 0*31( OWS "," OWS list-member )
    list-member = (key "=" value) / OWS
    key         = ( lcalpha / DIGIT ) 0*255 ( keychar )
    keychar     = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
    value       = 0*255(chr) nblk-chr
    nblk-chr    = %x21-2B / %x2D-3C / %x3E-7E
    chr         = %x20 / nblk-chr
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from opentelemetry.trace import TraceState

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["MAX_MEMBERS", "parse_tracestate"]

MAX_MEMBERS: Final = 32
"""At most this many list-members; a header with more is discarded whole."""

_MEMBER: Final = re.compile(
    rb"([a-z0-9][a-z0-9_\-*/@]{0,255})"
    rb"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
_OWS: Final = b" \t"
_DISCARDED: Final = TraceState()


class _ParsedTraceState(TraceState):
    """A ``TraceState`` holding members this module has already validated.

    The base constructor would check them again by the older grammar (and log
    each one it rejects), so the entries are stored as they are. Its other
    methods (``to_header``, lookups) work on the stored entries unchanged.
    """

    def __init__(self, entries: dict[str, str]) -> None:
        super().__init__()
        self._dict = entries


def parse_tracestate(values: Iterable[bytes]) -> TraceState:
    """Return the members of the ``tracestate`` header lines ``values``, or none.

    Several header lines form one list, in order (RFC 9110). Empty members are
    skipped and a repeated key keeps its leftmost (most recent) member. A
    malformed member, or more than `MAX_MEMBERS` members, makes the whole list
    invalid: an empty state is returned. Nothing is logged: the header is the
    caller's input.
    """
    entries: dict[str, str] = {}
    members = 0
    for value in values:
        for member in value.split(b","):
            stripped = member.strip(_OWS)
            if not stripped:
                continue  # an empty list-member (OWS) is allowed
            match = _MEMBER.fullmatch(stripped)
            members += 1
            if match is None or members > MAX_MEMBERS:
                return _DISCARDED
            entries.setdefault(match[1].decode("ascii"), match[2].decode("ascii"))
    return _ParsedTraceState(entries)
