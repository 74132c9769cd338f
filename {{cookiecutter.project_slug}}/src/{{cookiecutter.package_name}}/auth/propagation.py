"""The caller's identity on outbound calls: a W3C Baggage member, ``enduser.id``.

Baggage rather than a home-made header: it is the W3C format for context that travels
with a request, OpenTelemetry propagators read it on the other side, and it sits next to
the trace headers that the same client sends. It carries the subject only, never the
token: a downstream service that needs to act as the caller needs its own token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from {{ cookiecutter.package_name }}.observability.logs.context import user_id_var

if TYPE_CHECKING:
    import httpx

__all__ = ["USER_BAGGAGE_KEY", "add_user_baggage"]

USER_BAGGAGE_KEY: Final = "enduser.id"


async def add_user_baggage(request: httpx.Request) -> None:
    """Request hook (httpx): add ``baggage: enduser.id=<subject>`` while a caller is known."""
    user_id = user_id_var.get()
    if user_id is None:
        return
    # W3C Baggage: values are percent-encoded; members are joined with commas.
    member = f"{USER_BAGGAGE_KEY}={quote(user_id, safe='')}"
    existing = request.headers.get("baggage")
    request.headers["baggage"] = f"{existing},{member}" if existing else member
