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

The parts: `config` (the thresholds), `counts` (the window and the trials), `state`
(states, snapshot, the rejection error); `Guard` (one guarded call) is here. Import them
all from here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ParamSpec, TypeAlias, TypeVar

from {{ cookiecutter.package_name }}.resilience.config import BreakerConfig
from {{ cookiecutter.package_name }}.resilience.counts import (
    FAILED,
    OK,
    PERCENT,
    SLOW,
    OutcomeWindow,
    Trials,
    rates_exceeded,
)
from {{ cookiecutter.package_name }}.resilience.state import BreakerSnapshot, CircuitOpenError, CircuitState

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

# The breaker's vocabulary is re-exported: callers import everything from here.
__all__ = [
    "BreakerConfig",
    "BreakerSnapshot",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "StateChangeCallback",
]

P = ParamSpec("P")
T = TypeVar("T")

# Callers rejected in HALF_OPEN are told to come back soon: trials usually settle fast.
_HALF_OPEN_RETRY_AFTER = 1.0


# Module-level aliases: faster to look up than enum members on the hot path.
_CLOSED = CircuitState.CLOSED
_HALF_OPEN = CircuitState.HALF_OPEN


class CircuitBreaker:
    """Guards calls to one dependency; see the module docstring for the state machine.

    Use ``async with breaker.guard(): ...`` or ``await breaker.call(fn, *args)``.
    Exceptions for which ``is_failure`` returns False (a constraint violation, a 404)
    count as successes; `asyncio.CancelledError` counts as neither. ``on_state_change``
    runs synchronously on every transition and must not raise.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_generation",
        "_is_failure",
        "_name",
        "_on_state_change",
        "_open_until",
        "_slow_after",
        "_state",
        "_trials",
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
        # CLOSED
        self._window = OutcomeWindow(config.sliding_window_size)
        # OPEN
        self._open_until = 0.0
        # HALF_OPEN
        self._trials = Trials()

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
        window = self._window
        calls = window.calls
        return {
            "state": state,
            "failure_rate": PERCENT * window.failures / calls if calls else 0.0,
            "slow_call_rate": PERCENT * window.slow_calls / calls if calls else 0.0,
            "calls": calls,
            "retry_after": self._open_until - now if state is CircuitState.OPEN else None,
        }

    def guard(self) -> AbstractAsyncContextManager[None]:
        """Protect the calls in an ``async with`` block; raises `CircuitOpenError` on entry."""
        return Guard(self)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this breaker."""
        async with Guard(self):
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
        trials = self._trials
        if trials.admitted >= self._config.permitted_calls_in_half_open:
            # Rejected, not queued. Trials are running, so the deadline is still ahead.
            retry_after = min(_HALF_OPEN_RETRY_AFTER, trials.deadline - now)
            raise CircuitOpenError(self._name, retry_after)
        trials.start(now, self._config.max_wait_in_half_open)

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
            outcome = OK
        elif isinstance(exc, asyncio.CancelledError):
            # Says nothing about the dependency's health; only frees the trial slot.
            if self._state is _HALF_OPEN:
                self._trials.cancel()
            return
        else:
            outcome = FAILED if self._is_failure(exc) else OK
        slow_after = self._slow_after
        if outcome == OK and slow_after is not None and self._clock() - started > slow_after:
            outcome = SLOW
        if self._state is _CLOSED:
            self._record(outcome)
        else:
            self._record_trial(outcome)

    def _record(self, outcome: int) -> None:
        # Skip the rate check on the common all-healthy window.
        if self._window.record(outcome) and self._should_open():
            self._open(self._clock())

    def _should_open(self) -> bool:
        config = self._config
        window = self._window
        if (
            config.consecutive_failures is not None
            and window.consecutive_failures >= config.consecutive_failures
        ):
            return True
        calls = window.calls
        return calls >= config.minimum_calls and rates_exceeded(
            config, window.failures, window.slow_calls, calls
        )

    def _record_trial(self, outcome: int) -> None:
        trials = self._trials
        trials.record(outcome)
        permitted = self._config.permitted_calls_in_half_open
        if trials.finished < permitted:
            return
        if rates_exceeded(self._config, trials.failures, trials.slow_calls, permitted):
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
            and self._trials.running
            and now >= self._trials.deadline
        ):
            self._open(now)

    def _open(self, now: float) -> None:
        self._open_until = now + self._config.wait_in_open
        self._transition(CircuitState.OPEN)

    def _half_open(self) -> None:
        self._trials = Trials()
        self._transition(CircuitState.HALF_OPEN)

    def _close(self) -> None:
        self._window = OutcomeWindow(self._config.sliding_window_size)
        self._transition(CircuitState.CLOSED)

    def _transition(self, new: CircuitState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        if self._on_state_change is not None:
            self._on_state_change(self, old, new)


StateChangeCallback: TypeAlias = Callable[[CircuitBreaker, CircuitState, CircuitState], None]
"""Called with (breaker, old state, new state) on every transition."""


class Guard:
    """One protected call: admission on enter, outcome on exit.

    A plain class with slots is cheaper than ``@asynccontextmanager`` on this hot path.
    """

    __slots__ = ("_admitted", "_breaker")

    def __init__(self, breaker: CircuitBreaker) -> None:
        """Guard one call through `breaker`."""
        self._breaker = breaker
        self._admitted = (0, 0.0)

    async def __aenter__(self) -> None:
        """Admit the call, or raise `CircuitOpenError`."""
        self._admitted = self._breaker.admit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Record the call's outcome."""
        self._breaker.settle(self._admitted, exc)
