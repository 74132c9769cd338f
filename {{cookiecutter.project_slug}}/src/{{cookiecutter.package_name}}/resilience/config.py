"""A circuit breaker's configuration: when it opens, how long it stays open, how it recovers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, Field

__all__ = ["PERCENT", "BreakerConfig", "BreakerSettings"]

PERCENT: Final = 100.0


class BreakerSettings(BaseModel):
    """Circuit breaker thresholds (resilience4j semantics, shorter waits for a web service)."""

    failure_rate_threshold: float = Field(50.0, gt=0, le=100)
    sliding_window_size: int = Field(20, ge=1)
    minimum_calls: int = Field(10, ge=1)
    consecutive_failures: int | None = Field(5, ge=1)
    slow_call_seconds: float | None = Field(None, gt=0)
    wait_in_open_seconds: float = Field(5.0, gt=0)
    half_open_calls: int = Field(1, ge=1)
    max_wait_in_half_open_seconds: float = Field(10.0, gt=0)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens, how long it stays open and how it probes for recovery.

    Rates and thresholds are percentages; durations are seconds.
    """

    failure_rate_threshold: float = 50.0
    sliding_window_size: int = 20
    minimum_calls: int = 10
    consecutive_failures: int | None = None
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 100.0
    wait_in_open: float = 5.0
    permitted_calls_in_half_open: int = 1
    max_wait_in_half_open: float = 10.0

    @classmethod
    def from_settings(cls, settings: BreakerSettings) -> BreakerConfig:
        """The configuration that a `BreakerSettings` group of the service's settings describes."""
        return cls(
            failure_rate_threshold=settings.failure_rate_threshold,
            sliding_window_size=settings.sliding_window_size,
            minimum_calls=settings.minimum_calls,
            consecutive_failures=settings.consecutive_failures,
            slow_call_duration=settings.slow_call_seconds,
            wait_in_open=settings.wait_in_open_seconds,
            permitted_calls_in_half_open=settings.half_open_calls,
            max_wait_in_half_open=settings.max_wait_in_half_open_seconds,
        )

    def __post_init__(self) -> None:
        """Reject settings that would make the breaker never open or never recover."""
        size = self.sliding_window_size
        consecutive = self.consecutive_failures
        slow = self.slow_call_duration
        checks = (
            ("failure_rate_threshold", 0 < self.failure_rate_threshold <= PERCENT, "in (0, 100]"),
            ("sliding_window_size", size >= 1, ">= 1"),
            ("minimum_calls", 1 <= self.minimum_calls <= size, f"in [1, {size}] (the window)"),
            ("consecutive_failures", consecutive is None or consecutive >= 1, "None or >= 1"),
            ("slow_call_duration", slow is None or slow > 0, "None or > 0"),
            (
                "slow_call_rate_threshold",
                0 < self.slow_call_rate_threshold <= PERCENT,
                "in (0, 100]",
            ),
            ("wait_in_open", self.wait_in_open > 0, "> 0"),
            ("permitted_calls_in_half_open", self.permitted_calls_in_half_open >= 1, ">= 1"),
            ("max_wait_in_half_open", self.max_wait_in_half_open > 0, "> 0"),
        )
        problems = [
            f"{field} must be {rule}, got {getattr(self, field)!r}"
            for field, ok, rule in checks
            if not ok
        ]
        if problems:
            msg = "invalid BreakerConfig: " + "; ".join(problems)
            raise ValueError(msg)
