"""What a circuit breaker reports: its state, a snapshot, the error a rejected call raises."""

from __future__ import annotations

import enum
from typing import TypedDict

__all__ = ["BreakerSnapshot", "CircuitOpenError", "CircuitState"]


class CircuitState(enum.StrEnum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(Exception):
    """A call was rejected because the breaker is open or its trial slots are taken."""

    def __init__(self, breaker: str, retry_after: float) -> None:
        """Record which breaker rejected the call and when a call may be admitted again."""
        super().__init__(f"circuit {breaker!r} is open; retry in {retry_after:.1f}s")
        self.breaker = breaker
        self.retry_after = retry_after


class BreakerSnapshot(TypedDict):
    """A point-in-time view of a breaker, for health reports and metrics."""

    state: CircuitState
    failure_rate: float
    slow_call_rate: float
    calls: int
    retry_after: float | None
