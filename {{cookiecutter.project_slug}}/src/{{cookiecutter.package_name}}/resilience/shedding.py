"""Load shedding: admit at most `max_in_flight` requests, refuse the rest at once.

Queueing without bound turns overload into timeouts for everyone; refusing the excess
early (503 with `Retry-After`, answered by the service middleware) keeps latency flat
for the requests that are admitted. The same counts feed the health report and metrics.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


class RequestStats:
    """Admission, the in-flight count and the 5xx ratio over the last completed window."""

    __slots__ = (
        "_clock",
        "_errors",
        "_total",
        "_window",
        "_window_end",
        "error_rate",
        "in_flight",
        "max_in_flight",
    )

    def __init__(
        self,
        max_in_flight: int,
        window_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Admit `max_in_flight` at once; `error_rate` describes the last full window."""
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.error_rate = 0.0
        self._window = window_seconds
        self._clock = clock
        self._window_end = clock() + window_seconds
        self._total = 0
        self._errors = 0

    def admit(self) -> bool:
        """Count a request in, or return False (shed it) when the limit is reached."""
        if self.in_flight >= self.max_in_flight:
            self.finished(503)
            return False
        self.in_flight += 1
        return True

    def release(self, status: int) -> None:
        """Count an admitted request out with its response status."""
        self.in_flight -= 1
        self.finished(status)

    def finished(self, status: int) -> None:
        """Record one answered request (admitted or shed)."""
        now = self._clock()
        if now >= self._window_end:
            self.error_rate = self._errors / self._total if self._total else 0.0
            self._total = self._errors = 0
            self._window_end = now + self._window
        self._total += 1
        if status >= 500:  # noqa: PLR2004 - server errors
            self._errors += 1
