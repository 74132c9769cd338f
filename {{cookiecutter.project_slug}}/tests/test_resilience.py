"""The circuit breaker's state machine, driven by a fake clock: nothing here sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from {{ cookiecutter.package_name }}.resilience.breaker import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
)
from tests.fake_clock import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

# Small windows keep the arithmetic in each test obvious.
TINY = BreakerConfig(sliding_window_size=2, minimum_calls=2, wait_in_open=5.0)


class DependencyError(Exception):
    """The protected dependency is down: a failure."""


class BadRequestError(Exception):
    """The caller's mistake: it propagates but says nothing about the dependency."""


Transition = tuple[CircuitBreaker, CircuitState, CircuitState]


@pytest.fixture
def clock() -> FakeClock:
    """Provide a fresh fake clock."""
    return FakeClock()


def make_breaker(
    config: BreakerConfig, clock: FakeClock, transitions: list[Transition] | None = None
) -> CircuitBreaker:
    """Build a breaker named ``dep`` for which only `DependencyError` is a failure."""

    def record(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        if transitions is not None:
            transitions.append((breaker, old, new))

    return CircuitBreaker(
        "dep",
        config,
        is_failure=lambda exc: isinstance(exc, DependencyError),
        clock=clock,
        on_state_change=record,
    )


async def ok() -> str:
    """Answer like a healthy dependency."""
    return "ok"


async def raise_(exc: Exception) -> None:
    """Fail like a broken dependency (or a bad request), with ``exc``."""
    raise exc


async def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    """Make ``times`` successful calls through the breaker."""
    for _ in range(times):
        assert await breaker.call(ok) == "ok"


async def fail(
    breaker: CircuitBreaker, times: int = 1, error: type[Exception] = DependencyError
) -> None:
    """Make ``times`` calls that raise ``error``, and check that it propagates unchanged."""
    for _ in range(times):
        with pytest.raises(error):
            await breaker.call(raise_, error())


async def open_breaker(breaker: CircuitBreaker) -> None:
    """Trip a breaker configured like `TINY`."""
    await fail(breaker, 2)
    assert breaker.state is OPEN


async def test_stays_closed_below_minimum_calls(clock: FakeClock) -> None:
    """Nine failures out of nine are not enough evidence when ten calls are required."""
    breaker = make_breaker(BreakerConfig(sliding_window_size=20, minimum_calls=10), clock)
    await fail(breaker, 9)
    assert breaker.state is CLOSED
    await fail(breaker)
    assert breaker.state is OPEN


async def test_opens_when_failure_rate_reaches_threshold(clock: FakeClock) -> None:
    """40% stays closed; 50% (the threshold, inclusive) over the last ten calls opens."""
    config = BreakerConfig(failure_rate_threshold=50.0, sliding_window_size=10, minimum_calls=10)
    breaker = make_breaker(config, clock)
    await succeed(breaker, 6)
    await fail(breaker, 4)
    assert breaker.state is CLOSED
    assert breaker.snapshot()["failure_rate"] == pytest.approx(40.0)
    await fail(breaker)  # evicts the oldest success: 5 failures in the last 10
    assert breaker.state is OPEN


async def test_window_forgets_old_outcomes(clock: FakeClock) -> None:
    """A failure that has left the window no longer counts towards the rate."""
    config = BreakerConfig(failure_rate_threshold=50.0, sliding_window_size=4, minimum_calls=4)
    breaker = make_breaker(config, clock)
    await fail(breaker)
    await succeed(breaker, 5)
    await fail(breaker)  # window: ok ok ok fail, the first failure is gone
    assert breaker.state is CLOSED
    assert breaker.snapshot()["failure_rate"] == pytest.approx(25.0)
    await fail(breaker)  # window: ok ok fail fail
    assert breaker.state is OPEN


async def test_consecutive_failures_open_regardless_of_rate(clock: FakeClock) -> None:
    """With ``consecutive_failures=3`` the third failure in a row opens, a success resets."""
    config = BreakerConfig(sliding_window_size=100, minimum_calls=100, consecutive_failures=3)
    breaker = make_breaker(config, clock)
    await fail(breaker, 2)
    await succeed(breaker)
    await fail(breaker, 2)
    assert breaker.state is CLOSED
    await fail(breaker)
    assert breaker.state is OPEN


async def test_exceptions_that_are_not_failures_count_as_successes(clock: FakeClock) -> None:
    """A bad request propagates to the caller but does not count against the dependency."""
    config = BreakerConfig(sliding_window_size=4, minimum_calls=4)
    breaker = make_breaker(config, clock)
    await fail(breaker, 10, BadRequestError)
    snapshot = breaker.snapshot()
    assert snapshot["state"] is CLOSED
    assert snapshot["calls"] == 4
    assert snapshot["failure_rate"] == 0.0
    await fail(breaker, 2)  # window: bad bad fail fail
    assert breaker.state is OPEN


async def test_slow_calls_open_the_breaker(clock: FakeClock) -> None:
    """Successful calls slower than ``slow_call_duration`` count towards the slow-call rate."""
    config = BreakerConfig(
        sliding_window_size=4,
        minimum_calls=4,
        slow_call_duration=1.0,
        slow_call_rate_threshold=50.0,
    )
    breaker = make_breaker(config, clock)

    async def taking(seconds: float) -> None:
        clock.advance(seconds)

    await breaker.call(taking, 1.5)
    await breaker.call(taking, 1.0)  # not slower than the limit
    await succeed(breaker)
    assert breaker.state is CLOSED
    assert breaker.snapshot()["slow_call_rate"] == pytest.approx(100 / 3)
    await breaker.call(taking, 2.0)
    assert breaker.state is OPEN
    assert breaker.snapshot()["failure_rate"] == 0.0


async def test_open_breaker_rejects_without_calling(clock: FakeClock) -> None:
    """While open, calls fail fast with the time left until the next trial."""
    breaker = make_breaker(TINY, clock)
    await open_breaker(breaker)
    clock.advance(1.5)
    calls: list[str] = []

    async def dependency() -> None:
        calls.append("called")

    with pytest.raises(CircuitOpenError) as rejected:
        await breaker.call(dependency)
    assert calls == []
    assert rejected.value.breaker == "dep"
    assert rejected.value.retry_after == pytest.approx(3.5)
    assert str(rejected.value) == "circuit 'dep' is open; retry in 3.5s"
    assert breaker.snapshot()["retry_after"] == pytest.approx(3.5)


async def test_half_open_after_wait_in_open(clock: FakeClock) -> None:
    """The breaker stays open for exactly ``wait_in_open`` seconds."""
    breaker = make_breaker(TINY, clock)
    await open_breaker(breaker)
    clock.advance(4.9)
    assert breaker.state is OPEN
    clock.advance(0.1)
    assert breaker.state is HALF_OPEN
    assert breaker.snapshot()["retry_after"] is None


async def test_half_open_admits_exactly_the_permitted_trials(clock: FakeClock) -> None:
    """Of ten concurrent calls, three become trials and seven are rejected, not queued."""
    breaker = make_breaker(dataclasses.replace(TINY, permitted_calls_in_half_open=3), clock)
    await open_breaker(breaker)
    clock.advance(5.0)
    release = asyncio.Event()
    entered = 0

    async def trial() -> None:
        nonlocal entered
        async with breaker.guard():
            entered += 1
            await release.wait()

    tasks = [asyncio.create_task(trial()) for _ in range(10)]
    await asyncio.sleep(0)  # every task runs up to its first suspension
    assert entered == 3
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    rejected = [result for result in results if isinstance(result, CircuitOpenError)]
    assert len(rejected) == 7
    assert all(0 < error.retry_after <= 1.0 for error in rejected)
    assert results.count(None) == 3
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    ("failed_trials", "expected"),
    [(0, CLOSED), (1, CLOSED), (2, OPEN), (3, OPEN)],
)
async def test_trials_decide_between_closed_and_open(
    clock: FakeClock, failed_trials: int, expected: CircuitState
) -> None:
    """Once all three trials have finished, a failure rate of 50% or more re-opens."""
    config = dataclasses.replace(TINY, permitted_calls_in_half_open=3, failure_rate_threshold=50.0)
    breaker = make_breaker(config, clock)
    await open_breaker(breaker)
    clock.advance(5.0)
    outcomes = [False] * failed_trials + [True] * (3 - failed_trials)
    for succeeds in outcomes[:-1]:
        await (succeed(breaker) if succeeds else fail(breaker))
    assert breaker.state is HALF_OPEN  # no verdict before the last trial
    await (succeed(breaker) if outcomes[-1] else fail(breaker))
    assert breaker.state is expected
    if expected is CLOSED:
        assert breaker.snapshot()["calls"] == 0  # a fresh window


async def test_slow_trials_reopen(clock: FakeClock) -> None:
    """The slow-call rate also decides the trials."""
    config = dataclasses.replace(
        TINY, permitted_calls_in_half_open=2, slow_call_duration=1.0, slow_call_rate_threshold=50.0
    )
    breaker = make_breaker(config, clock)
    await open_breaker(breaker)
    clock.advance(5.0)

    async def slow() -> None:
        clock.advance(2.0)

    await breaker.call(slow)
    await succeed(breaker)
    assert breaker.state is OPEN


async def test_stuck_trial_reopens_after_max_wait(clock: FakeClock) -> None:
    """A trial that never finishes cannot wedge the breaker in HALF_OPEN."""
    breaker = make_breaker(dataclasses.replace(TINY, max_wait_in_half_open=10.0), clock)
    await open_breaker(breaker)
    clock.advance(5.0)
    release = asyncio.Event()
    stuck = asyncio.create_task(breaker.call(release.wait))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    clock.advance(9.9)
    assert breaker.state is HALF_OPEN
    clock.advance(0.1)
    assert breaker.state is OPEN
    assert breaker.snapshot()["retry_after"] == pytest.approx(5.0)

    release.set()
    await stuck  # its late success belongs to the abandoned trial round
    assert breaker.state is OPEN
    clock.advance(5.0)
    await succeed(breaker)
    assert breaker.state is CLOSED


async def test_cancelled_trial_frees_its_slot(clock: FakeClock) -> None:
    """Cancellation is neither success nor failure: the slot goes to the next caller."""
    breaker = make_breaker(TINY, clock)
    await open_breaker(breaker)
    clock.advance(5.0)
    trial = asyncio.create_task(breaker.call(asyncio.Event().wait))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state is HALF_OPEN
    await succeed(breaker)
    assert breaker.state is CLOSED


async def test_cancelled_calls_do_not_count_while_closed(clock: FakeClock) -> None:
    """Cancelled calls leave the window untouched."""
    breaker = make_breaker(TINY, clock)
    calls = [asyncio.create_task(breaker.call(asyncio.Event().wait)) for _ in range(3)]
    await asyncio.sleep(0)
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    assert breaker.snapshot()["calls"] == 0
    await fail(breaker)
    assert breaker.snapshot()["calls"] == 1


async def test_outcomes_from_an_earlier_state_are_ignored(clock: FakeClock) -> None:
    """Failures that began before the breaker opened judge neither the trial nor the new window."""
    breaker = make_breaker(TINY, clock)
    during_trial, after_close, trial_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def fails_once(released: asyncio.Event) -> None:
        await released.wait()
        raise DependencyError

    late_in_trial = asyncio.create_task(breaker.call(fails_once, during_trial))
    late_after_close = asyncio.create_task(breaker.call(fails_once, after_close))
    await asyncio.sleep(0)
    await open_breaker(breaker)
    clock.advance(5.0)
    trial = asyncio.create_task(breaker.call(trial_done.wait))
    await asyncio.sleep(0)

    during_trial.set()
    with pytest.raises(DependencyError):
        await late_in_trial
    assert breaker.state is HALF_OPEN  # not taken for the trial's outcome
    trial_done.set()
    await trial
    assert breaker.state is CLOSED

    after_close.set()
    with pytest.raises(DependencyError):
        await late_after_close
    assert breaker.snapshot()["calls"] == 0  # not recorded in the fresh window


async def test_every_transition_is_reported(clock: FakeClock) -> None:
    """``on_state_change`` sees each transition, with the breaker that made it."""
    transitions: list[Transition] = []
    breaker = make_breaker(TINY, clock, transitions)
    await open_breaker(breaker)
    clock.advance(5.0)
    await fail(breaker)  # the trial fails
    clock.advance(5.0)
    await succeed(breaker)  # the trial succeeds
    assert transitions == [
        (breaker, CLOSED, OPEN),
        (breaker, OPEN, HALF_OPEN),
        (breaker, HALF_OPEN, OPEN),
        (breaker, OPEN, HALF_OPEN),
        (breaker, HALF_OPEN, CLOSED),
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_rate_threshold", 0.0),
        ("failure_rate_threshold", 100.5),
        ("failure_rate_threshold", float("nan")),
        ("sliding_window_size", 0),
        ("minimum_calls", 0),
        ("minimum_calls", 21),
        ("consecutive_failures", 0),
        ("slow_call_duration", 0.0),
        ("slow_call_rate_threshold", 0.0),
        ("wait_in_open", 0.0),
        ("permitted_calls_in_half_open", 0),
        ("max_wait_in_half_open", -1.0),
    ],
)
def test_config_rejects_invalid_values(field: str, value: float) -> None:
    """Each setting is validated, and the message names it."""
    changes: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=f"invalid BreakerConfig: {field} must be"):
        dataclasses.replace(BreakerConfig(), **changes)
