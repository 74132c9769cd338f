"""The service middleware's extension points, re-exported by `middleware`.

Hooks observe each request (tracing, metrics); admission steps (authentication,
rate limiting) may turn one away with a `Rejection`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.types import Scope

__all__ = ["AdmissionStep", "Rejection", "RequestHook"]


class RequestHook(Protocol):
    """Something that observes each request: tracing and metrics are hooks."""

    def request_started(self, scope: Scope) -> object:
        """Called before the app runs; the result is handed to `request_finished`."""

    def request_finished(  # noqa: PLR0913, PLR0917 - called positionally on the hot path
        self,
        scope: Scope,
        started: object,
        route: str | None,
        status: int,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """Called once the response is sent.

        `route` is the route template (None if no route matched), `status` is 500
        if the app failed, `error` what it raised.
        """


@dataclass(frozen=True, slots=True)
class Rejection:
    """An answer that turns a request away before the app runs (RFC 9457 problem)."""

    status: int
    detail: str
    headers: Mapping[str, str] = field(default_factory=dict)


class AdmissionStep(Protocol):
    """Something that decides whether a request may reach the app: auth, rate limits."""

    async def admit(
        self, scope: Scope, response_headers: list[tuple[bytes, bytes]]
    ) -> Rejection | None:
        """Return a `Rejection` to answer now, or None to let the request go on.

        Headers appended to `response_headers` are sent with the response either
        way (for example the rate limit fields). Steps run in order, each only if
        the ones before it admitted the request.
        """
