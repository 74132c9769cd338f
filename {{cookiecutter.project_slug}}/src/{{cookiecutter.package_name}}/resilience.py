"""Circuit breaker for asyncio code, with resilience4j CircuitBreaker semantics.

A breaker watches the outcomes of calls to one dependency (the database, a downstream
host) and stops calling it while it is failing: callers fail fast instead of piling up
on timeouts, and the dependency gets room to recover.

- CLOSED: calls flow; the outcomes of the last ``sliding_window_size`` calls are kept.
  Once ``minimum_calls`` are recorded and the failure rate or the slow-call rate reaches
  its threshold (or after ``consecutive_failures`` failures in a row), the breaker opens.
- OPEN: calls are rejected with `CircuitOpenError` until ``wait_in_open`` has passed.
- HALF_OPEN: exactly ``permitted_calls_in_half_open`` trial calls are let through and
  any others are rejected. When all trials have finished the breaker closes (with an
  empty window) or opens again, depending on the trials' failure and slow-call rates.
  A trial still running ``max_wait_in_half_open`` after admission re-opens the breaker.

There are no timers: time-driven transitions happen lazily, when a call arrives or the
state is read. All bookkeeping is synchronous, so on one event loop no lock is needed,
and nothing is held while the protected call runs. Each state change starts a new
generation; a call settles only into the generation it was admitted in, so a slow call
from before the breaker opened cannot skew the half-open trials.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeAlias, TypedDict, TypeVar

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from {{ cookiecutter.package_name }}.settings import BreakerSettings

P = ParamSpec("P")
T = TypeVar("T")

_PERCENT = 100.0

# Outcomes kept in the sliding window. Only successful calls can be slow: a slow
# failure already counts as a failure.
_OK = 0
_FAILED = 1
_SLOW = 2

# Callers rejected in HALF_OPEN are told to come back soon: trials usually settle fast.
_HALF_OPEN_RETRY_AFTER = 1.0


class CircuitState(enum.StrEnum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module-level aliases: faster to look up than enum members on the hot path.
_CLOSED = CircuitState.CLOSED
_HALF_OPEN = CircuitState.HALF_OPEN


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
            ("failure_rate_threshold", 0 < self.failure_rate_threshold <= _PERCENT, "in (0, 100]"),
            ("sliding_window_size", size >= 1, ">= 1"),
            ("minimum_calls", 1 <= self.minimum_calls <= size, f"in [1, {size}] (the window)"),
            ("consecutive_failures", consecutive is None or consecutive >= 1, "None or >= 1"),
            ("slow_call_duration", slow is None or slow > 0, "None or > 0"),
            (
                "slow_call_rate_threshold",
                0 < self.slow_call_rate_threshold <= _PERCENT,
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


class CircuitBreaker:
    """Guards calls to one dependency; see the module docstring for the state machine.

    Use ``async with breaker.guard(): ...`` or ``await breaker.call(fn, *args)``.
    Exceptions for which ``is_failure`` returns False (a constraint violation, a 404)
    count as successes; `asyncio.CancelledError` counts as neither. ``on_state_change``
    runs synchronously on every transition and must not raise.
    """

    __slots__ = (
        "_calls",
        "_clock",
        "_config",
        "_consecutive_failures",
        "_failures",
        "_generation",
        "_is_failure",
        "_name",
        "_on_state_change",
        "_open_until",
        "_position",
        "_slow_after",
        "_slow_calls",
        "_state",
        "_trial_deadline",
        "_trial_failures",
        "_trial_slow_calls",
        "_trials_admitted",
        "_trials_finished",
        "_trials_running",
        "_window",
    )

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        is_failure: Callable[[BaseException], bool],
        clock: Callable[[], float] = time.monotonic,
        on_state_change: StateChangeCallback | None = None,
    ) -> None:
        """Create a closed breaker; ``clock`` is injectable so tests need not sleep."""
        self._name = name
        self._config = config
        self._is_failure = is_failure
        self._clock = clock
        self._on_state_change = on_state_change
        self._slow_after = config.slow_call_duration
        self._state = CircuitState.CLOSED
        self._generation = 0
        # CLOSED: a ring of the last outcomes, with running totals so that recording
        # a call costs the same whatever the window size.
        self._window = [_OK] * config.sliding_window_size
        self._position = 0
        self._calls = 0
        self._failures = 0
        self._slow_calls = 0
        self._consecutive_failures = 0
        # OPEN
        self._open_until = 0.0
        # HALF_OPEN
        self._trials_admitted = 0
        self._trials_running = 0
        self._trials_finished = 0
        self._trial_failures = 0
        self._trial_slow_calls = 0
        self._trial_deadline = 0.0

    def __repr__(self) -> str:
        """Name and stored state, without applying time-driven transitions."""
        return f"<CircuitBreaker {self._name!r} {self._state}>"

    @property
    def name(self) -> str:
        """The dependency this breaker protects, e.g. ``database`` or ``api.example.com:443``."""
        return self._name

    @property
    def config(self) -> BreakerConfig:
        """The breaker's configuration."""
        return self._config

    @property
    def state(self) -> CircuitState:
        """The current state, after any transition that the clock makes due."""
        if self._state is not CircuitState.CLOSED:
            self._advance(self._clock())
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        """Return the state and the window's rates (percent), for health reports and metrics."""
        now = self._clock()
        if self._state is not CircuitState.CLOSED:
            self._advance(now)
        state = self._state
        calls = self._calls
        return {
            "state": state,
            "failure_rate": _PERCENT * self._failures / calls if calls else 0.0,
            "slow_call_rate": _PERCENT * self._slow_calls / calls if calls else 0.0,
            "calls": calls,
            "retry_after": self._open_until - now if state is CircuitState.OPEN else None,
        }

    def guard(self) -> AbstractAsyncContextManager[None]:
        """Protect the calls in an ``async with`` block; raises `CircuitOpenError` on entry."""
        return _Guard(self)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this breaker."""
        async with _Guard(self):
            return await fn(*args, **kwargs)

    def admit(self) -> tuple[int, float]:
        """Admit a call or raise `CircuitOpenError`; pass the result to `settle`.

        For callers that hold a call open across awaits themselves (the database's
        guarded connection); everyone else uses `guard()` or `call()`.
        """
        if self._state is not _CLOSED:
            self._admit_trial(self._clock())
        return self._generation, self._clock() if self._slow_after is not None else 0.0

    def _admit_trial(self, now: float) -> None:
        """Admit a half-open trial, or raise `CircuitOpenError`."""
        self._advance(now)
        if self._state is CircuitState.OPEN:
            raise CircuitOpenError(self._name, self._open_until - now)
        if self._trials_admitted >= self._config.permitted_calls_in_half_open:
            # Rejected, not queued. Trials are running, so the deadline is still ahead.
            retry_after = min(_HALF_OPEN_RETRY_AFTER, self._trial_deadline - now)
            raise CircuitOpenError(self._name, retry_after)
        if self._trials_running == 0:
            self._trial_deadline = now + self._config.max_wait_in_half_open
        self._trials_admitted += 1
        self._trials_running += 1

    def settle(self, admitted: tuple[int, float], exc: BaseException | None) -> None:
        """Record the outcome of a call that `admit` let through (`exc` None if it succeeded)."""
        generation, started = admitted
        if generation != self._generation:
            # Admitted under an earlier state: its outcome says nothing about this one.
            return
        if self._state is not _CLOSED:
            # A trial that overran max_wait_in_half_open re-opens the breaker instead of counting.
            self._advance(self._clock())
            if generation != self._generation:
                return
        if exc is None:
            outcome = _OK
        elif isinstance(exc, asyncio.CancelledError):
            # Says nothing about the dependency's health; only frees the trial slot.
            if self._state is _HALF_OPEN:
                self._trials_admitted -= 1
                self._trials_running -= 1
            return
        else:
            outcome = _FAILED if self._is_failure(exc) else _OK
        slow_after = self._slow_after
        if outcome == _OK and slow_after is not None and self._clock() - started > slow_after:
            outcome = _SLOW
        if self._state is _CLOSED:
            self._record(outcome)
        else:
            self._record_trial(outcome)

    def _record(self, outcome: int) -> None:
        window = self._window
        position = self._position
        if self._calls == len(window):
            evicted = window[position]
            if evicted == _FAILED:
                self._failures -= 1
            elif evicted == _SLOW:
                self._slow_calls -= 1
        else:
            self._calls += 1
        window[position] = outcome
        position += 1
        self._position = 0 if position == len(window) else position
        if outcome == _FAILED:
            self._failures += 1
            self._consecutive_failures += 1
        else:
            self._consecutive_failures = 0
            if outcome == _SLOW:
                self._slow_calls += 1
        # Skip the rate check on the common all-healthy window.
        if (self._failures or self._slow_calls) and self._should_open():
            self._open(self._clock())

    def _should_open(self) -> bool:
        config = self._config
        if (
            config.consecutive_failures is not None
            and self._consecutive_failures >= config.consecutive_failures
        ):
            return True
        calls = self._calls
        return calls >= config.minimum_calls and _rates_exceeded(
            config, self._failures, self._slow_calls, calls
        )

    def _record_trial(self, outcome: int) -> None:
        self._trials_running -= 1
        self._trials_finished += 1
        if outcome == _FAILED:
            self._trial_failures += 1
        elif outcome == _SLOW:
            self._trial_slow_calls += 1
        permitted = self._config.permitted_calls_in_half_open
        if self._trials_finished < permitted:
            return
        if _rates_exceeded(self._config, self._trial_failures, self._trial_slow_calls, permitted):
            self._open(self._clock())
        else:
            self._close()

    def _advance(self, now: float) -> None:
        """Apply the transitions that only the passing of time triggers."""
        if self._state is CircuitState.OPEN:
            if now >= self._open_until:
                self._half_open()
        elif (
            self._state is CircuitState.HALF_OPEN
            and self._trials_running
            and now >= self._trial_deadline
        ):
            self._open(now)

    def _open(self, now: float) -> None:
        self._open_until = now + self._config.wait_in_open
        self._transition(CircuitState.OPEN)

    def _half_open(self) -> None:
        self._trials_admitted = self._trials_running = self._trials_finished = 0
        self._trial_failures = self._trial_slow_calls = 0
        self._transition(CircuitState.HALF_OPEN)

    def _close(self) -> None:
        self._window = [_OK] * self._config.sliding_window_size
        self._position = self._calls = self._failures = self._slow_calls = 0
        self._consecutive_failures = 0
        self._transition(CircuitState.CLOSED)

    def _transition(self, new: CircuitState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        if self._on_state_change is not None:
            self._on_state_change(self, old, new)


StateChangeCallback: TypeAlias = Callable[[CircuitBreaker, CircuitState, CircuitState], None]
"""Called with (breaker, old state, new state) on every transition."""


def _rates_exceeded(config: BreakerConfig, failures: int, slow_calls: int, calls: int) -> bool:
    # Compare by multiplying rather than dividing: exact for whole-number thresholds.
    return (
        failures * _PERCENT >= config.failure_rate_threshold * calls
        or slow_calls * _PERCENT >= config.slow_call_rate_threshold * calls
    )


class _Guard:
    """One protected call: admission on enter, outcome on exit.

    A plain class with slots is cheaper than ``@asynccontextmanager`` on this hot path.
    """

    __slots__ = ("_admitted", "_breaker")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._admitted = (0, 0.0)

    async def __aenter__(self) -> None:
        self._admitted = self._breaker.admit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._breaker.settle(self._admitted, exc)
