"""Who a verified token names: the principal the admission step puts on the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller: its subject, what it may do, and every claim of its token.

    Read-only: the requests that send the same token share it (`VerifiedTokens`).
    """

    subject: str
    scopes: frozenset[str]
    claims: Mapping[str, Any]
