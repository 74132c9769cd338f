"""Tokens verified a moment ago, so that a caller's next requests skip the signature.

A caller sends the same token for its whole lifetime (minutes to an hour), and checking
it is the most expensive step of a request: ~890k instructions for an RS256 token,
more than the rest of `GET /items/{id}` (the benchmark's JWT row). An entry is keyed by
the token's exact text and holds the principal it verified to. It is used until the
token's ``exp`` (plus the leeway, as verification allows) and only while the key that
verified it is the one the key set holds for its ``kid`` now: a rotation that withdraws
or replaces the key ends the entry with it. Rejected tokens are never stored, and the
least recently used entry makes room when the cache is full.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jwt

    from {{ cookiecutter.package_name }}.auth.keys import KeySet
    from {{ cookiecutter.package_name }}.auth.principal import Principal


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    kid: str | None
    alg: str
    key: jwt.PyJWK
    valid_until: float  # the token's exp plus the leeway, in seconds since the epoch


class VerifiedTokens:
    """At most `size` verified tokens and their principals (none when `size` is 0)."""

    __slots__ = ("_entries", "_leeway", "_size")

    def __init__(self, size: int, leeway: float) -> None:
        """Hold up to `size` tokens, each until its ``exp`` plus `leeway` seconds."""
        self._size = size
        self._leeway = leeway
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, token: str, keys: KeySet) -> Principal | None:
        """The principal `token` verified to, if it is still valid with today's keys."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if time.time() >= entry.valid_until or keys.lookup(entry.kid, entry.alg) is not entry.key:
            del self._entries[token]  # verified again in full, and refused if it must be
            return None
        self._entries.move_to_end(token)
        return entry.principal

    def put(
        self, token: str, principal: Principal, kid: str | None, alg: str, key: jwt.PyJWK
    ) -> None:
        """Remember that `token`, signed with `key`, verified to `principal`."""
        if self._size == 0:
            return
        valid_until = float(principal.claims["exp"]) + self._leeway
        self._entries[token] = _Entry(principal, kid, alg, key, valid_until)
        self._entries.move_to_end(token)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
