"""Deadlines: one timer for every running deadline, with `asyncio.timeout` semantics."""

from __future__ import annotations

import asyncio
import time

import pytest

from {{ cookiecutter.package_name }}.resilience.deadline import Deadlines


async def test_an_overrun_is_cancelled_and_raised_as_timeout() -> None:
    deadlines = Deadlines(resolution=0.01)
    started = time.monotonic()
    deadline = deadlines.within(0.05)
    with pytest.raises(TimeoutError), deadline:
        await asyncio.sleep(5)
    elapsed = time.monotonic() - started
    assert deadline.expired
    assert 0.05 <= elapsed < 0.5  # fires at most about one resolution late
    assert len(deadlines) == 0
    # The cancellation was withdrawn: the task goes on awaiting normally.
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0
    await asyncio.sleep(0)


async def test_a_block_that_finishes_in_time_is_untouched() -> None:
    deadlines = Deadlines(resolution=0.01)
    deadline = deadlines.within(1.0)
    with deadline:
        await asyncio.sleep(0.02)
    assert not deadline.expired
    assert len(deadlines) == 0


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    deadlines = Deadlines(resolution=0.01)

    async def guarded() -> None:
        with deadlines.within(5.0):
            await asyncio.sleep(5)

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


def test_deadlines_follow_a_new_event_loop() -> None:
    """The app's Deadlines outlives a test's loop; the next loop's deadlines still fire."""
    deadlines = Deadlines(resolution=0.01)

    async def overrun() -> bool:
        deadline = deadlines.within(0.03)
        try:
            with deadline:
                await asyncio.sleep(5)
        except TimeoutError:
            return deadline.expired
        return False

    assert asyncio.run(overrun())
    assert asyncio.run(overrun())


async def test_entering_outside_a_task_is_an_error() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    entered: asyncio.Future[BaseException] = loop.create_future()

    def from_a_callback() -> None:
        try:
            deadlines.within(1.0).__enter__()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            entered.set_result(exc)

    loop.call_soon(from_a_callback)
    assert isinstance(await entered, RuntimeError)
