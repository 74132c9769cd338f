"""The W3C ``tracestate`` header, parsed by the current grammar of the spec.

Hand-written because OpenTelemetry's ``TraceState.from_header`` (and the
``TraceState`` constructor) follow the older vendor grammar: they reject keys
the current text allows (``foo@``, ``foo@@bar``, ``1abc@x1``), throw the whole
header away for one bad or repeated member, and log a WARNING that echoes the
caller's bytes for every such request. Here a malformed or repeated member is
dropped on its own, silently, and the rest of the list is kept:

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
"""At most this many list-members are kept; those further right are dropped."""

_MEMBER: Final = re.compile(
    rb"([a-z0-9][a-z0-9_\-*/@]{0,255})"
    rb"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
_OWS: Final = b" \t"


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
    """Return the valid members of the ``tracestate`` header lines ``values``.

    Several header lines form one list, in order (RFC 9110). Empty members are
    skipped, a malformed member or a repeated key (the leftmost, most recent
    one wins) is dropped alone, and only the first `MAX_MEMBERS` valid members
    are kept. Nothing is logged: the header is the caller's input.
    """
    entries: dict[str, str] = {}
    for value in values:
        for member in value.split(b","):
            match = _MEMBER.fullmatch(member.strip(_OWS))
            if match is None:
                continue  # empty (OWS) or malformed
            key = match[1].decode("ascii")
            if key in entries:
                continue
            entries[key] = match[2].decode("ascii")
            if len(entries) == MAX_MEMBERS:
                return _ParsedTraceState(entries)
    return _ParsedTraceState(entries)
