"""Load shedding: answer 503 at once when too many requests are in flight.

Queueing without bound turns overload into timeouts for everyone; refusing the excess
early keeps latency flat for the requests that are admitted. The same middleware keeps
the counts that the health report and metrics read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }}.problems import send_problem

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

_RETRY_AFTER = {"Retry-After": "1"}


class RequestStats:
    """In-flight count and the 5xx ratio over the last completed window."""

    __slots__ = ("_clock", "_errors", "_total", "_window", "_window_end", "error_rate", "in_flight")

    def __init__(
        self, window_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Count in windows of `window_seconds`; `error_rate` describes the last full one."""
        self.in_flight = 0
        self.error_rate = 0.0
        self._window = window_seconds
        self._clock = clock
        self._window_end = clock() + window_seconds
        self._total = 0
        self._errors = 0

    def finished(self, status: int) -> None:
        """Record one completed request."""
        now = self._clock()
        if now >= self._window_end:
            self.error_rate = self._errors / self._total if self._total else 0.0
            self._total = self._errors = 0
            self._window_end = now + self._window
        self._total += 1
        if status >= 500:  # noqa: PLR2004 - server errors
            self._errors += 1


class LoadSheddingMiddleware:
    """Pure ASGI: admit at most `max_in_flight` requests; exempt paths always pass."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        stats: RequestStats,
        exempt_paths: frozenset[str],
        on_shed: Callable[[], None] | None = None,
    ) -> None:
        """Wrap `app`; `stats` is shared with the health report, `on_shed` feeds metrics."""
        self.app = app
        self.max_in_flight = max_in_flight
        self.stats = stats
        self.exempt_paths = exempt_paths
        self.on_shed = on_shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Shed, or count the request in and out."""
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        stats = self.stats
        if stats.in_flight >= self.max_in_flight:
            stats.finished(503)
            if self.on_shed is not None:
                self.on_shed()
            await send_problem(send, 503, "too many requests in flight", headers=_RETRY_AFTER)
            return
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        stats.in_flight += 1
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            stats.in_flight -= 1
            stats.finished(status)
