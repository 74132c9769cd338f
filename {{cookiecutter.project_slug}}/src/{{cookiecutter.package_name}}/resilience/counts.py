"""What a breaker counts: the closed breaker's window of recent calls, the half-open trials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from {{ cookiecutter.package_name }}.resilience.config import PERCENT

if TYPE_CHECKING:
    from {{ cookiecutter.package_name }}.resilience.config import BreakerConfig

__all__ = ["FAILED", "OK", "PERCENT", "SLOW", "OutcomeWindow", "Trials", "rates_exceeded"]

# Outcomes kept in the sliding window. Only successful calls can be slow: a slow
# failure already counts as a failure.
OK: Final = 0
FAILED: Final = 1
SLOW: Final = 2


class OutcomeWindow:
    """The closed breaker's window: a ring of the last ``size`` outcomes.

    Running totals are kept, so that recording a call costs the same whatever the size.
    """

    __slots__ = (
        "_outcomes",
        "_position",
        "calls",
        "consecutive_failures",
        "failures",
        "slow_calls",
    )

    def __init__(self, size: int) -> None:
        """An empty window of ``size`` calls."""
        self._outcomes = [OK] * size
        self._position = 0
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0
        self.consecutive_failures = 0

    def record(self, outcome: int) -> int:
        """Add one call's outcome, evicting the oldest once the window is full.

        Return the failed and slow calls now in the window (0: all healthy).
        """
        outcomes = self._outcomes
        if outcome == OK and not (self.failures or self.slow_calls) and self.calls == len(outcomes):
            # The common case, a success in a full window of successes: every slot holds
            # OK already, and nothing else changes (no failure in the window means none
            # in a row either).
            return 0
        position = self._position
        if self.calls == len(outcomes):
            evicted = outcomes[position]
            if evicted == FAILED:
                self.failures -= 1
            elif evicted == SLOW:
                self.slow_calls -= 1
        else:
            self.calls += 1
        outcomes[position] = outcome
        position += 1
        self._position = 0 if position == len(outcomes) else position
        if outcome == FAILED:
            self.failures += 1
            self.consecutive_failures += 1
        else:
            self.consecutive_failures = 0
            if outcome == SLOW:
                self.slow_calls += 1
        return self.failures + self.slow_calls


class Trials:
    """The half-open breaker's trial calls: admitted, running, finished, and how they went."""

    __slots__ = ("admitted", "deadline", "failures", "finished", "running", "slow_calls")

    def __init__(self) -> None:
        """No trials yet."""
        self.admitted = 0
        self.running = 0
        self.finished = 0
        self.failures = 0
        self.slow_calls = 0
        self.deadline = 0.0

    def start(self, now: float, max_wait: float) -> None:
        """Count an admitted trial; the first of those running sets their deadline."""
        if self.running == 0:
            self.deadline = now + max_wait
        self.admitted += 1
        self.running += 1

    def cancel(self) -> None:
        """Free the slot of a cancelled trial: it says nothing about the dependency."""
        self.admitted -= 1
        self.running -= 1

    def record(self, outcome: int) -> None:
        """Count the outcome of a finished trial."""
        self.running -= 1
        self.finished += 1
        if outcome == FAILED:
            self.failures += 1
        elif outcome == SLOW:
            self.slow_calls += 1


def rates_exceeded(config: BreakerConfig, failures: int, slow_calls: int, calls: int) -> bool:
    """Whether the failure or the slow-call rate of ``calls`` reaches its threshold."""
    # Compare by multiplying rather than dividing: exact for whole-number thresholds.
    return (
        failures * PERCENT >= config.failure_rate_threshold * calls
        or slow_calls * PERCENT >= config.slow_call_rate_threshold * calls
    )
